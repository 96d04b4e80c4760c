# chaos creates PVH guests (type = "pvh", tsc_mode = "native" as the lab needs: QEMU's nested
# SVM has no next-RIP for the RDTSC intercepts): the test unikernels through their PVH entry
# (hello prints and powers off, noop idles until destroyed) and chaosd's PVH shells. Debian's
# Linux as PVH is 65-chaos-pvh-linux (opt-in: it does not reach its network yet).
. "$XENLAB_TESTS/lib.sh"

reaper=
daemon=
XENDEVD_PID=
cleanup() {
	for n in c-hellopvh c-nooppvh c-poolpvh c-netpvh c-diskpvh; do chaos destroy "$n" >/dev/null 2>&1; done
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	[ -n "$reaper" ] && kill "$reaper" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
no_loops() { [ -z "$(loops_of "$1")" ]; }
chaos reap --watch >reaper.log 2>&1 &
reaper=$!

# 1. hello: its line (rings found through HVM params), then poweroff and the reaper.
start=$(now)
out=$(chaos create "$(pvh_guest_cfg c-hellopvh "$GUEST/hello" 2 'extra = "pvh by chaos"')" 2>&1) ||
	fail "chaos create hello (PVH): expected success, got: $out"
echo "chaos create hello (PVH): $(elapsed "$start")s: $out"
log=$(console_log c-hellopvh)
wait_for_line "$log" 'hello from chaos test guest' 60 ||
	fail "hello (PVH) console: expected the hello line within 60s, got: $(tail -n 3 "$log" 2>&1); xl dmesg: $(xl dmesg | tail -n 5)"
line=$(grep 'hello from chaos test guest' "$log" | tail -n 1 | tr -d '\r')
echo "hello (PVH): $line"
expect_contains "hello's command line" 'cmdline="pvh by chaos"' "$line"
wait_gone c-hellopvh 30 || fail "c-hellopvh: expected the reaper to destroy it after poweroff: $(xl list)"

# 2. noop: idle (blocked, no CPU), then chaos destroy.
out=$(chaos create "$(pvh_guest_cfg c-nooppvh "$GUEST/noop" 2)" 2>&1) || fail "chaos create noop (PVH): expected success, got: $out"
sleep 2
t1=$(xl list c-nooppvh | awk 'NR == 2 { print $6 }')
state=$(xl list c-nooppvh | awk 'NR == 2 { print $5 }')
sleep 4
t2=$(xl list c-nooppvh | awk 'NR == 2 { print $6 }')
echo "noop (PVH): state $state, cpu time $t1 s -> $t2 s over 4 s"
expect_contains "noop (PVH) state (blocked)" b "$state"
awk -v a="$t1" -v b="$t2" 'BEGIN { exit !(b - a < 0.5) }' || fail "noop (PVH) cpu time: expected idle, got $t1 -> $t2"
expect_ok "chaos destroy noop (PVH)" chaos destroy c-nooppvh

# 3. chaosd keeps PVH shells; a PVH creation takes one.
pvh_guest_cfg c-poolpvh "$GUEST/hello" 2 >/dev/null
chaosd --flavor "config=$PWD/c-poolpvh.cfg,count=1" --reap-interval-ms 0 >chaosd.log 2>&1 &
daemon=$!
ready() { chaos pool status --json 2>/dev/null | grep -q '"ready":1'; }
wait_until 60 ready || fail "chaosd: expected one ready PVH shell, status: $(chaos pool status 2>&1); log: $(cat chaosd.log)"
out=$(chaos create c-poolpvh.cfg 2>&1) || fail "chaos create via chaosd (PVH): expected success, got: $out"
echo "chaos create via chaosd: $out"
expect_contains "the creation's path" "via the pool path (chaosd)" "$out"
wait_for_line "$(console_log c-poolpvh)" 'hello from chaos test guest' 60 ||
	fail "c-poolpvh console: expected the hello line within 60s, got: $(tail -n 3 "$(console_log c-poolpvh)" 2>&1)"
wait_gone c-poolpvh 30 || fail "c-poolpvh: expected gone after poweroff: $(xl list)"
kill "$daemon" && wait "$daemon" 2>/dev/null
daemon=
expect_eq "guests left after chaosd stopped" 0 "$(guest_count)"
