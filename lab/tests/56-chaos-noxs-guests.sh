# chaos creates the test unikernels on the NoXS plane (chaos_control_plane = "noxs": no
# Xenstore entries, a device page instead): hello prints one line per device of its device
# page (its sysctl device at least), then its greeting, and powers off; noop listens on its
# sysctl device (fe_state Connected) and powers off or reboots when `chaos shutdown` asks.
# The console log is written by xendevd's NoXS console backend (same path as xenconsoled's).
# xl knows NoXS guests by id only (it reads names from Xenstore): names are looked up with
# `chaos list`. Each as PV and as PVH.
. "$XENLAB_TESTS/lib.sh"

XENDEVD_PID=
chaos reap --watch >reaper.log 2>&1 &
reaper=$!
cleanup() {
	for n in nx-hello nx-hellopvh nx-probe nx-noop nx-ping; do chaos destroy "$n" >/dev/null 2>&1; done
	kill "$reaper" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
# The NoXS console and vif backends.
start_xendevd xendevd.log

# noxs_cfg NAME KERNEL TYPE EXTRA: writes ./NAME.cfg and prints its path.
noxs_cfg() {
	cat >"$PWD/$1.cfg" <<-EOF2
	name = "$1"
	type = "$3"
	kernel = "$GUEST/$2"
	extra = "$4"
	memory = 2
	chaos_control_plane = "noxs"
	on_poweroff = "destroy"
	on_reboot = "destroy"
	on_crash = "preserve"
	EOF2
	echo "$PWD/$1.cfg"
}

# chaos_field NAME COLUMN: a column of `chaos list` (2 id, 5 state, 6 cpu time) for NAME.
chaos_field() { chaos list | awk -v n="$1" -v c="$2" 'NR > 1 && $1 == n { print $c }'; }
chaos_gone() { [ -z "$(chaos_field "$1" 2)" ]; }
# created_domid OUTPUT: the domid in chaos create's "Created domain N (NAME)".
created_domid() { echo "$1" | sed -n 's/.*Created domain \([0-9][0-9]*\).*/\1/p'; }

# no_xenstore DOMID: chaos wrote nothing for the guest in Xenstore.
no_xenstore() {
	if xenstore-exists "/local/domain/$1" 2>/dev/null; then
		fail "xenstore: expected no /local/domain/$1 for a NoXS guest, got: $(xenstore-ls "/local/domain/$1" 2>&1 | head -n 5)"
	fi
}

# hello NAME TYPE: its device lines (sysctl, id 0, backend dom0), its greeting (domid unknown
# without Xenstore), poweroff.
hello() {
	out=$(chaos create "$(noxs_cfg "$1" hello "$2" "noxs words")" 2>&1) ||
		fail "chaos create $1 (NoXS, $2): expected success, got: $out"
	domid=$(created_domid "$out")
	[ -n "$domid" ] || fail "chaos create $1: expected 'Created domain N', got: $out"
	no_xenstore "$domid"
	log=$(console_log "$1")
	wait_for_line "$log" 'hello from chaos test guest' 60 ||
		fail "$1 console: expected the hello line within 60s, got: $(tail -n 5 "$log" 2>&1 | tr -d '\r'); xl list: $(xl list 2>&1)"
	tr -d '\r' <"$log" | grep -E 'hello' | sed "s/^/$1: /"
	grep -q 'noxs device page refused' "$log" && fail "$1: the guest refused its device page: $(grep refused "$log" | tr -d '\r')"
	# ADJUST if chaos numbers or places devices differently (ABI.md section 5: sysctl first).
	grep -qE 'hello: noxs device type=sysctl id=0 backend=0 ctrl=0x[0-9a-f]+ port=[1-9][0-9]*' "$log" ||
		fail "$1 console: expected a line for its sysctl device, got: $(grep 'noxs' "$log" | tr -d '\r')"
	line=$(grep 'hello from chaos test guest' "$log" | tail -n 1 | tr -d '\r')
	expect_contains "$1 greeting" 'domid=? cmdline="noxs words"' "$line"
	wait_until 10 chaos_gone "$1" || fail "$1: expected the reaper to destroy it after poweroff, still there: $(chaos list)"
}

hello nx-hello pv
hello nx-hellopvh pvh

# What only the control domain may do, asked by the guest: dev_add and dev_remove on itself,
# get of dom0's page. Patched Xen refuses each with -EPERM (XSM's dummy policy); stock Xen has
# no devctl (-ENOSYS).
case $(cat /sys/hypervisor/version/extra 2>/dev/null) in
*noxs*) want=-1 xen="patched Xen" ;;
*) want=-38 xen="stock Xen" ;;
esac
out=$(chaos create "$(noxs_cfg nx-probe hello pv "devctl-probe")" 2>&1) || fail "chaos create nx-probe: expected success, got: $out"
log=$(console_log nx-probe)
wait_for_line "$log" 'hello: devctl probe:' 60 || fail "nx-probe console: expected its devctl probe line, got: $(tail -n 5 "$log" 2>&1 | tr -d '\r')"
line=$(grep 'hello: devctl probe:' "$log" | tail -n 1 | tr -d '\r')
echo "nx-probe on $xen: $line"
expect_contains "devctl from a guest on $xen" "dev_add self=$want dev_remove self=$want get dom0=$want" "$line"
wait_until 10 chaos_gone nx-probe || fail "nx-probe: expected the reaper to destroy it after poweroff, still there: $(chaos list)"

# noop: idle, then a poweroff request through the sysctl device.
out=$(chaos create "$(noxs_cfg nx-noop noop pv "")" 2>&1) || fail "chaos create nx-noop (NoXS): expected success, got: $out"
domid=$(created_domid "$out")
[ -n "$domid" ] || fail "chaos create nx-noop: expected 'Created domain N', got: $out"
no_xenstore "$domid"
sleep 2
t1=$(chaos_field nx-noop 6)
sleep 4
t2=$(chaos_field nx-noop 6)
state=$(chaos_field nx-noop 5)
echo "nx-noop: state $state, cpu time $t1 s -> $t2 s over 4 s"
expect_eq "nx-noop state" "-b----" "$state"
awk -v a="$t1" -v b="$t2" 'BEGIN { exit !(b - a < 0.5) }' || fail "nx-noop cpu time: expected idle (<0.5 s over 4 s), got $t1 -> $t2"
start=$(now)
out=$(chaos shutdown -w --timeout 60 nx-noop 2>&1) || fail "chaos shutdown -w nx-noop: expected the guest to obey its sysctl request, got: $out"
echo "nx-noop: powered off on request in $(elapsed "$start")s"
wait_until 10 chaos_gone nx-noop || fail "nx-noop: expected the reaper to destroy it after poweroff, still there: $(chaos list)"

# reboot requests: with on_reboot = "destroy" the domain goes away as well.
for type in pv pvh; do
	if out=$(chaos create "$(noxs_cfg nx-noop noop $type "")" 2>&1); then
		sleep 2
		out=$(chaos shutdown -R -w --timeout 60 nx-noop 2>&1) || fail "chaos shutdown -R -w nx-noop ($type): expected the guest to obey its reboot request, got: $out"
		wait_until 10 chaos_gone nx-noop || fail "nx-noop ($type): expected gone after the reboot request (on_reboot = destroy), still there: $(chaos list)"
		echo "nx-noop ($type): rebooted on request"
	else
		fail "chaos create nx-noop (NoXS, $type): expected success, got: $out"
	fi
done
# ping on the NoXS plane: it finds its vif and sysctl devices, xendevd's vif backend connects
# its netfront (more in 79-noxs-ping), dom0 pings it, and it obeys a poweroff request.
bridge_addr xenbr0 10.99.0.1/24
cat >nx-ping.cfg <<-EOF2
name = "nx-ping"
kernel = "$GUEST/ping"
memory = 4
vif = ['bridge=xenbr0,ip=10.99.0.30']
chaos_control_plane = "noxs"
on_poweroff = "destroy"
on_crash = "preserve"
EOF2
out=$(chaos create nx-ping.cfg 2>&1) || fail "chaos create nx-ping (NoXS, a vif): expected success, got: $out"
log=$(console_log nx-ping)
wait_for_line "$log" 'ping: vif 0 up' 60 ||
	fail "nx-ping console: expected 'ping: vif 0 up' within 60s, got: $(tr -d '\r' <"$log" 2>&1 | tail -n 3); state $(chaos_field nx-ping 5)"
echo "nx-ping: $(grep 'ping: vif 0 up' "$log" | tr -d '\r')"
out=$(ping -c 1 -W 10 10.99.0.30 2>&1) || fail "ping 10.99.0.30: expected a reply from nx-ping, got: $out"
out=$(chaos shutdown -w --timeout 60 nx-ping 2>&1) || fail "chaos shutdown -w nx-ping: expected the guest to obey its sysctl request, got: $out"
wait_until 10 chaos_gone nx-ping || fail "nx-ping: expected the reaper to destroy it after poweroff, still there: $(chaos list)"
echo "nx-ping: powered off on request"

[ -z "$(ls /run/chaos/domains/)" ] || fail "state dir: expected empty after reaping, got: $(ls /run/chaos/domains/)"
