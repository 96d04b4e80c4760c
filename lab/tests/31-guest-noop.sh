# noop (guests/, a no_std Rust PV unikernel, the LightVM noop) boots in the least memory it
# needs (1 MiB) and sleeps: it stays blocked and uses (almost) no CPU until destroyed.
. "$XENLAB_TESTS/lib.sh"

mem=${NOOP_MEMORY:-1}
cat >"$PWD/noop.cfg" <<EOF
name = "noop"
type = "pv"
kernel = "$GUEST/noop"
memory = $mem
vcpus = 1
on_crash = "preserve"
EOF

# cpu_time: the Time(s) column of `xl list noop`.
cpu_time() { xl list noop 2>/dev/null | awk 'NR == 2 { print $6 }'; }

start=$(now)
out=$(xl create -q "$PWD/noop.cfg" 2>&1) || fail "xl create noop: expected success, got: $out"
echo "xl create ${mem} MiB: $(elapsed "$start")s"
sleep 2
t0=$(cpu_time)
[ -n "$t0" ] || fail "noop: expected to be running 2s after create, xl list: $(xl list)"
sleep 6
t1=$(cpu_time)
state=$(xl list noop 2>/dev/null | awk 'NR == 2 { print $5 }')
echo "noop: state $state, cpu time $t0 s -> $t1 s over 6 s"
case "$state" in *c*) fail "noop crashed: $(xl dmesg | tail -n 5)" ;; esac
expect_contains "noop state (blocked)" b "$state"
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 0.5) }' ||
	fail "noop cpu time: expected < 0.5 s more over 6 s idle, got $t0 -> $t1"

expect_ok "xl destroy noop" xl destroy noop
wait_gone noop 30 || fail "noop: expected gone after xl destroy: $(xl list)"
