# chaos creates the test unikernels on real Xen: hello prints its line on the console that
# xenconsoled serves and powers off, and the reaper (`chaos reap --watch`) destroys it as
# on_poweroff says; noop stays up and idle until chaos destroys it.
. "$XENLAB_TESTS/lib.sh"

chaos reap --watch >reaper.log 2>&1 &
reaper=$!
trap 'kill $reaper 2>/dev/null' EXIT

cat >hello.cfg <<-EOF2
name = "c-hello"
kernel = "$GUEST/hello"
extra = "made by chaos"
memory = 2
on_poweroff = "destroy"
EOF2
start=$(now)
out=$(chaos create hello.cfg 2>&1) || fail "chaos create hello: expected success, got: $out"
echo "chaos create hello: $(elapsed "$start")s: $out"
log=$(console_log c-hello)
wait_for_line "$log" 'hello from chaos test guest' 60 ||
	fail "hello console: expected the hello line within 60s, got: $(tail -n 3 "$log" 2>&1); xl list: $(xl list)"
line=$(grep 'hello from chaos test guest' "$log" | tail -n 1 | tr -d '\r')
echo "console: $line"
expect_contains "hello's command line" 'cmdline="made by chaos"' "$line"
wait_gone c-hello 30 || fail "c-hello: expected the reaper to destroy it after poweroff, still there: $(xl list)"
expect_contains "reaper log" "Destroy" "$(cat reaper.log)"
[ -z "$(ls /run/chaos/domains/)" ] || fail "state dir: expected empty after reaping, got: $(ls /run/chaos/domains/)"

cat >noop.cfg <<-EOF2
name = "c-noop"
kernel = "$GUEST/noop"
memory = 2
EOF2
out=$(chaos create noop.cfg 2>&1) || fail "chaos create noop: expected success, got: $out"
sleep 1
t1=$(xl list c-noop | awk 'NR == 2 { print $6 }')
state=$(xl list c-noop | awk 'NR == 2 { print $5 }')
sleep 4
t2=$(xl list c-noop | awk 'NR == 2 { print $6 }')
echo "noop: state $state, cpu time $t1 s -> $t2 s over 4 s"
expect_eq "noop state" "-b----" "$state"
awk -v a="$t1" -v b="$t2" 'BEGIN { exit !(b - a < 0.5) }' || fail "noop cpu time: expected idle (<0.5 s over 4 s), got $t1 -> $t2"
expect_ok "chaos destroy noop" chaos destroy c-noop
domain_exists c-noop && fail "c-noop: expected gone after chaos destroy, still listed: $(xl list)"
true
