# A lab boot where xenstored never starts (XENLAB_XENSTORED=0): chaos creates, lists, consoles,
# shuts down and destroys NoXS guests, and the reaper is woken by VIRQ_DOM_EXC (nobody else
# holds it). Skipped in the ordinary boot; ./test.sh runs it in a boot of its own.
. "$XENLAB_TESTS/lib.sh"

if [ "$XENLAB_XENSTORED" != 0 ]; then
	echo "skipped: needs a boot without xenstored (XENLAB_XENSTORED=0)"
	exit 0
fi
pidof xenstored >/dev/null && fail "xenstored: expected not running in this boot, it is"
XENDEVD_PID=
cleanup() {
	for n in nx-hello nx-noop; do chaos destroy "$n" >/dev/null 2>&1; done
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log

chaos create "$(noxs_cfg nx-hello hello)" >/dev/null || fail "chaos create nx-hello (NoXS, no xenstored): expected success"
wait_for_line "$(console_log nx-hello)" 'hello from chaos test guest' 60 ||
	fail "nx-hello: expected its greeting within 60 s, got: $(cat "$(console_log nx-hello)" 2>&1)"
grep -q 'hello: noxs device type=sysctl' "$(console_log nx-hello)" ||
	fail "nx-hello: expected its sysctl device line, got: $(cat "$(console_log nx-hello)")"
wait_gone_chaos nx-hello 30 || fail "nx-hello: expected the reaper to destroy it after poweroff"
grep -q 'woken by VIRQ_DOM_EXC' /run/chaos/reaper.log ||
	fail "reaper: expected it to use VIRQ_DOM_EXC without xenstored, log: $(cat /run/chaos/reaper.log 2>&1)"

chaos create "$(noxs_cfg nx-noop noop)" >/dev/null || fail "chaos create nx-noop: expected success"
chaos_has nx-noop || fail "chaos list: expected nx-noop, got: $(chaos list 2>&1)"
out=$(timeout 2 chaos console nx-noop </dev/null 2>&1)
case "$out" in *error*) fail "chaos console nx-noop: expected to attach, got: $out" ;; esac
start=$(now)
out=$(chaos shutdown -w --timeout 60 nx-noop 2>&1) || fail "chaos shutdown -w nx-noop: expected success, got: $out"
echo "nx-noop: powered off on request in $(elapsed "$start") s, without xenstored"
chaos create -p "$(noxs_cfg nx-noop noop)" >/dev/null || fail "chaos create -p nx-noop: expected success"
chaos destroy nx-noop || fail "chaos destroy nx-noop: expected success"
expect_eq "guests left" "" "$(ls /run/chaos/domains)"
