# noop (guests/) watches control/shutdown on the Xenstore plane, as a PV kernel does: `xl
# shutdown` powers it off (PV), `xl reboot` reboots it (PVH: reason code 1), and `chaos
# shutdown -w` powers off a noop chaos created. Each request is seen by the guest's watch
# (it sleeps in SCHEDOP_poll on its Xenstore channel), not by a timeout.
. "$XENLAB_TESTS/lib.sh"

reaper=
cleanup() {
	for n in nooppv nooppvh c-noop-down; do xl destroy $n >/dev/null 2>&1; done
	[ -n "$reaper" ] && kill $reaper 2>/dev/null
}
trap cleanup EXIT

# feature_written: noop wrote control/feature-poweroff (its watch is set up next) in domain $domid.
feature_written() { [ "$(xenstore-read "/local/domain/$domid/control/feature-poweroff" 2>/dev/null)" = 1 ]; }

# noop_cfg NAME TYPE MEMORY: writes ./NAME.cfg and prints its path.
noop_cfg() {
	cat >"$PWD/$1.cfg" <<-EOF2
	name = "$1"
	type = "$2"
	$([ "$2" = pvh ] && echo 'tsc_mode = "native"')
	kernel = "$GUEST/noop"
	memory = $3
	vcpus = 1
	on_poweroff = "destroy"
	on_reboot = "destroy"
	on_crash = "preserve"
	EOF2
	echo "$PWD/$1.cfg"
}

# xl_case NAME TYPE MEMORY COMMAND REASON: xl creates noop, `xl COMMAND` (shutdown or reboot)
# must make it shut down with reason code REASON (xl's log) and go away.
xl_case() {
	xl_log=/var/log/xen/xl-$1.log
	rm -f "$xl_log"
	out=$(xl create -q "$(noop_cfg "$1" "$2" "$3")" 2>&1) || fail "xl create $1: expected success, got: $out"
	domid=$(xl domid "$1") || fail "xl domid $1: expected a domid"
	wait_until 30 feature_written || fail "$1: expected control/feature-poweroff = 1 written by noop within 30s"
	start=$(now)
	out=$(xl "$4" "$1" 2>&1) || fail "xl $4 $1: expected success, got: $out"
	wait_for_line "$xl_log" "Domain $domid has shut down, reason code $5 " 60 ||
		fail "$1: expected xl to see domain $domid shut down with reason code $5 after xl $4, xl log: $(grep 'shut down' "$xl_log" 2>&1); xl list: $(xl list 2>&1)"
	wait_gone "$1" 30 || fail "$1: expected gone after shutting down, still there: $(xl list)"
	echo "$1 ($2): xl $4 -> reason code $5 in $(elapsed "$start")s"
}

xl_case nooppv pv "${NOOP_MEMORY:-1}" shutdown 0
xl_case nooppvh pvh "${PVH_MEMORY:-2}" reboot 1

# chaos: shutdown --wait returns once the domain shut down; the reaper applies on_poweroff.
chaos reap --watch >reaper.log 2>&1 &
reaper=$!
cat >noop.cfg <<-EOF2
name = "c-noop-down"
kernel = "$GUEST/noop"
memory = 2
on_poweroff = "destroy"
EOF2
out=$(chaos create noop.cfg 2>&1) || fail "chaos create noop: expected success, got: $out"
domid=$(xl domid c-noop-down) || fail "xl domid c-noop-down: expected a domid"
wait_until 30 feature_written || fail "c-noop-down: expected control/feature-poweroff = 1 written by noop within 30s"
start=$(now)
out=$(chaos shutdown -w --timeout 60 c-noop-down 2>&1) || fail "chaos shutdown -w c-noop-down: expected success, got: $out"
echo "c-noop-down: chaos shutdown -w in $(elapsed "$start")s"
wait_gone c-noop-down 30 || fail "c-noop-down: expected the reaper to destroy it after poweroff, still there: $(xl list)"
[ -z "$(ls /run/chaos/domains/)" ] || fail "state dir: expected empty after reaping, got: $(ls /run/chaos/domains/)"
