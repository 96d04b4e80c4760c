# The ping unikernel on the NoXS plane, served by xendevd's userspace vif backend: chaos
# creates it with `chaos_control_plane = "noxs"` (no Xenstore entry); xendevd maps its vif
# control page (granted to dom0), puts a TAP vif<domid>.0 on xenbr0, connects the guest's
# netfront (ABI.md 4.2) and moves frames between the TAP and the guest's rings; dom0 pings it.
# Then, with 20 ping guests at once: all answer; xendevd is killed and restarted while they
# run and they answer again (their vifs reconnect to the rings in their control pages) and
# their consoles carry on into the same logs (each guest prints its count of answers); all
# are destroyed and nothing is left: no TAP, no grant mapping in xendevd
# (/proc/PID/maps), no event channel bound by it (/proc/interrupts).
. "$XENLAB_TESTS/lib.sh"

[ -d /sys/class/net/xenbr0/brif ] || fail "xenbr0: expected a Linux bridge, not found"
XENDEVD_PID=
N=${NOXS_PING_GUESTS:-20}
chaos reap --watch >reaper.log 2>&1 &
reaper=$!
cleanup() {
	for d in $(chaos list 2>/dev/null | awk 'NR > 1 && $1 ~ /^np-/ { print $1 }'); do
		chaos destroy "$d" >/dev/null 2>&1
	done
	kill "$reaper" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log
bridge_addr xenbr0 10.99.0.1/24

# noxs_ping_cfg NAME IP: writes ./NAME.cfg and prints its path.
noxs_ping_cfg() {
	cat >"$PWD/$1.cfg" <<-EOF2
	name = "$1"
	type = "pv"
	kernel = "$GUEST/ping"
	memory = 4
	vcpus = 1
	vif = ['bridge=xenbr0,ip=$2']
	chaos_control_plane = "noxs"
	on_poweroff = "destroy"
	on_crash = "preserve"
	EOF2
	echo "$PWD/$1.cfg"
}

created_domid() { echo "$1" | sed -n 's/.*Created domain \([0-9][0-9]*\).*/\1/p'; }
chaos_gone() { ! chaos list | awk 'NR > 1 { print $1 }' | grep -qx "$1"; }

# What xendevd holds: grant mappings and bound event channels.
xendevd_maps() { grep -c /dev/xen/gntdev "/proc/$XENDEVD_PID/maps"; }
xendevd_channels() { grep -c 'evtchn:xendevd' /proc/interrupts; }
taps() {
	_n=0
	for _i in /sys/class/net/vif*; do [ -e "$_i" ] && _n=$((_n + 1)); done
	echo "$_n"
}
taps_are() { [ "$(taps)" -eq "$1" ]; }

# answers NAME IP: dom0's ping gets 3 of 3 replies.
answers() {
	out=$(ping -c 3 -i 0.2 -W 5 "$2" 2>&1) ||
		fail "ping -c 3 $2: expected 3 replies from $1, got: $out; console: $(tail -n 3 "$(console_log "$1")" | tr -d '\r'); xendevd: $(tail -n 5 xendevd.log)"
	expect_contains "ping $2" "3 packets received" "$out"
}

# One guest: created, connected, answering, powered off on request, nothing left.
start=$(now)
out=$(chaos create "$(noxs_ping_cfg np-one 10.99.0.20)" 2>&1) || fail "chaos create np-one: expected success, got: $out; xendevd: $(tail -n 5 xendevd.log)"
domid=$(created_domid "$out")
[ -n "$domid" ] || fail "chaos create np-one: expected 'Created domain N', got: $out"
if xenstore-exists "/local/domain/$domid" 2>/dev/null; then
	fail "xenstore: expected nothing for the NoXS guest $domid, got: $(xenstore-ls "/local/domain/$domid" 2>&1 | head -n 3)"
fi
log=$(console_log np-one)
wait_for_line "$log" 'ping: vif 0 up' 60 ||
	fail "np-one console: expected 'ping: vif 0 up' within 60s, got: $(tail -n 3 "$log" 2>&1 | tr -d '\r'); xendevd: $(tail -n 5 xendevd.log)"
echo "np-one: $(grep 'ping: vif 0 up' "$log" | tr -d '\r') ($(elapsed "$start")s)"
[ -e "/sys/class/net/vif$domid.0/brport" ] || fail "vif$domid.0: expected a port of xenbr0, got: $(ls /sys/class/net/xenbr0/brif)"
answers np-one 10.99.0.20
echo "np-one: 3 of 3 pings answered; xendevd holds $(xendevd_maps) grant mappings, $(xendevd_channels) channels"
out=$(chaos shutdown -w --timeout 60 np-one 2>&1) || fail "chaos shutdown -w np-one: expected success, got: $out"
wait_until 10 chaos_gone np-one || fail "np-one: expected the reaper to destroy it after poweroff, still there: $(chaos list)"
wait_until 10 test ! -e "/sys/class/net/vif$domid.0" || fail "vif$domid.0: expected gone with the guest, still there"
expect_eq "grant mappings left in xendevd" 0 "$(xendevd_maps)"
expect_eq "event channels left bound by xendevd" 0 "$(xendevd_channels)"
echo "np-one: powered off on request; its TAP, mappings and channels gone"

# N guests at once.
i=1
while [ "$i" -le "$N" ]; do
	out=$(chaos create "$(noxs_ping_cfg "np-$i" "10.99.0.$((100 + i))")" 2>&1) || fail "chaos create np-$i: expected success, got: $out; xendevd: $(tail -n 5 xendevd.log)"
	i=$((i + 1))
done
all_answer() {
	i=1
	while [ "$i" -le "$N" ]; do
		wait_for_line "$(console_log "np-$i")" 'ping: vif 0 up' 60 ||
			fail "np-$i: expected 'ping: vif 0 up' within 60s, got: $(tail -n 3 "$(console_log "np-$i")" 2>&1 | tr -d '\r')"
		answers "np-$i" "10.99.0.$((100 + i))"
		i=$((i + 1))
	done
}
all_answer
expect_eq "TAPs" "$N" "$(taps)"
echo "$N guests: all answer; xendevd holds $(xendevd_maps) grant mappings, $(xendevd_channels) channels"

# xendevd killed and restarted: the guests answer again.
kill -9 "$XENDEVD_PID"
wait "$XENDEVD_PID" 2>/dev/null
wait_until 10 taps_are 0 || fail "TAPs: expected them gone with the killed xendevd, $(taps) left"
start_xendevd xendevd2.log
wait_until 30 taps_are "$N" || fail "TAPs after the restart: expected $N, got $(taps); xendevd: $(tail -n 5 xendevd2.log)"
start=$(now)
all_answer
echo "$N guests: all answer again after xendevd was killed and restarted ($(elapsed "$start")s for all pings)"
# The console backend went down and came back too: each guest's log has what it printed
# before (vif up; 1 and 2 echo requests answered) and what it printed after (the 4th of its 6).
i=1
while [ "$i" -le "$N" ]; do
	log=$(console_log "np-$i")
	wait_for_line "$log" 'ping: answered 4 echo requests' 30 ||
		fail "np-$i console after xendevd's restart: expected 'ping: answered 4 echo requests' (6 answered), got: $(tail -n 3 "$log" 2>&1 | tr -d '\r')"
	grep -q 'ping: answered 2 echo requests' "$log" ||
		fail "np-$i console: expected what it printed before the restart, got: $(tr -d '\r' <"$log" | head -n 5)"
	i=$((i + 1))
done
echo "$N guests: their console logs hold what they printed before and after xendevd's restart"

i=1
while [ "$i" -le "$N" ]; do
	chaos destroy "np-$i" >/dev/null 2>&1 || fail "chaos destroy np-$i failed"
	i=$((i + 1))
done
wait_until 10 taps_are 0 || fail "TAPs: expected none after destroying the guests, $(taps) left: $(ls /sys/class/net)"
expect_eq "grant mappings left in xendevd" 0 "$(xendevd_maps)"
expect_eq "event channels left bound by xendevd" 0 "$(xendevd_channels)"
echo "$N guests destroyed: no TAP, grant mapping or bound channel left"
if grep -qiE 'error|panick' xendevd.log xendevd2.log; then
	fail "xendevd logs: expected no errors, got: $(grep -iE 'error|panick' xendevd.log xendevd2.log)"
fi
