# The ping unikernel (guests/ping) on the Xenstore plane against Linux netback: its netfront
# connects (device/vif/0 keys, XenbusState Connected), it answers ARP and ICMP echo, and dom0
# pings it through xenbr0. Created by xl (PV and PVH, xendevd in place of the vif-bridge
# script) and by chaos (PV). Each guest is shut down by a request it obeys (control/shutdown)
# and its vif goes with it before the next one starts.
. "$XENLAB_TESTS/lib.sh"

[ -d /sys/class/net/xenbr0/brif ] || fail "xenbr0: expected a Linux bridge, not found"
XENDEVD_PID=
reaper=
cleanup() {
	for n in xlping xlpingpvh c-ping; do xl destroy $n >/dev/null 2>&1; done
	[ -n "$reaper" ] && kill "$reaper" 2>/dev/null
	stop_xendevd
	xl_conf_restore
}
trap cleanup EXIT
xl_hotplug_scripts 0
start_xendevd xendevd.log
bridge_addr xenbr0 10.99.0.1/24

# ping_cfg NAME TYPE IP: writes ./NAME.cfg and prints its path.
ping_cfg() {
	cat >"$PWD/$1.cfg" <<-EOF2
	name = "$1"
	type = "$2"
	$([ "$2" = pvh ] && echo 'tsc_mode = "native"')
	kernel = "$GUEST/ping"
	memory = 4
	vcpus = 1
	vif = ['bridge=xenbr0,ip=$3']
	on_poweroff = "destroy"
	on_crash = "preserve"
	EOF2
	echo "$PWD/$1.cfg"
}

# answers NAME IP DOMID: the guest says its vif is up, dom0's ping gets 3 of 3 replies.
answers() {
	log=$(console_log "$1")
	wait_for_line "$log" 'ping: vif 0 up' 120 ||
		fail "$1 console: expected 'ping: vif 0 up' within 120s, got: $(tail -n 3 "$log" 2>&1 | tr -d '\r'); backend state $(xenstore-read "/local/domain/0/backend/vif/$3/0/state" 2>&1); xl list: $(xl list 2>&1)"
	echo "$1: $(grep 'ping: vif 0 up' "$log" | tr -d '\r')"
	start=$(now)
	out=$(ping -c 3 -W 10 "$2" 2>&1) ||
		fail "ping -c 3 $2: expected 3 replies from $1, got: $out; console: $(tail -n 3 "$log" | tr -d '\r')"
	expect_contains "ping $2" "3 packets received" "$out"
	echo "$1: $(echo "$out" | grep -E 'packets|round-trip') ($(elapsed "$start")s)"
}

# vif_gone DOMID: no vifDOMID.0 interface or bridge port left.
vif_gone() {
	# (wait_until calls _gone without arguments: the name goes through a variable)
	_vif=/sys/class/net/vif$1.0
	_gone() { [ ! -e "$_vif" ]; }
	wait_until 30 _gone || fail "/sys/class/net: expected no vif$1.0 after the guest is gone, still there"
}

# xl_case NAME TYPE IP: xl creates ping, dom0 pings it, `xl shutdown -w` powers it off.
xl_case() {
	start=$(now)
	out=$(xl create "$(ping_cfg "$1" "$2" "$3")" 2>&1) || fail "xl create $1: expected success, got: $out; xendevd log: $(cat xendevd.log)"
	domid=$(xl domid "$1") || fail "xl domid $1: expected a domid"
	echo "$1 ($2): xl create: $(elapsed "$start")s, domain $domid"
	answers "$1" "$3" "$domid"
	out=$(timeout 60 xl shutdown -w "$1" 2>&1) || fail "xl shutdown -w $1: expected the guest to power off, got: $out"
	wait_gone "$1" 30 || fail "$1: expected gone after xl shutdown, still there: $(xl list)"
	vif_gone "$domid"
	echo "$1: powered off on request, vif$domid.0 gone"
}

xl_case xlping pv 10.99.0.12
xl_case xlpingpvh pvh 10.99.0.14

# chaos writes the vif's Xenstore directories as xl does; xendevd attaches it.
chaos reap --watch >reaper.log 2>&1 &
reaper=$!
start=$(now)
out=$(chaos create "$(ping_cfg c-ping pv 10.99.0.13)" 2>&1) || fail "chaos create c-ping: expected success, got: $out"
domid=$(xl domid c-ping) || fail "xl domid c-ping: expected a domid"
echo "c-ping: chaos create: $(elapsed "$start")s, domain $domid"
answers c-ping 10.99.0.13 "$domid"
out=$(chaos shutdown -w --timeout 60 c-ping 2>&1) || fail "chaos shutdown -w c-ping: expected success, got: $out"
wait_gone c-ping 30 || fail "c-ping: expected the reaper to destroy it after poweroff, still there: $(xl list)"
vif_gone "$domid"
echo "c-ping: powered off on request, vif$domid.0 gone"
if grep -q 'error' xendevd.log; then
	fail "xendevd log: expected no errors, got: $(grep error xendevd.log)"
fi
