# Lifecycle of a running Linux PV guest created by chaos: pause and unpause, `chaos console`,
# `chaos shutdown -R -w` (control/shutdown = reboot; on_reboot = "restart" brings it back as a
# new domain), and `chaos shutdown -w` (poweroff; on_poweroff = "destroy" removes it). A reaper
# runs meanwhile, as chaosd's would, and must not fight with `shutdown --wait`.
. "$XENLAB_TESTS/lib.sh"

chaos reap --watch >reaper.log 2>&1 &
reaper=$!
trap 'kill $reaper 2>/dev/null' EXIT

name=life
cfg=$(pv_linux_cfg $name 'extra = "console=hvc0 quiet xenlab.stay"' 'on_reboot = "restart"')
log=$(console_log $name)
state() { xl list "$name" 2>/dev/null | awk 'NR == 2 { print $5 }'; }

out=$(chaos create -p "$cfg" 2>&1) || fail "chaos create -p: expected success, got: $out"
expect_contains "state after create -p" "p" "$(state)"
expect_ok "chaos unpause" chaos unpause $name
wait_for_line "$log" GUEST-STAYING 150 || fail "console: expected GUEST-STAYING within 150s, got: $(tail -n 5 "$log" 2>&1)"
first=$(xl domid $name)
echo "running as domain $first"

expect_ok "chaos pause" chaos pause $name
expect_contains "state after pause" "p" "$(state)"
expect_ok "chaos unpause" chaos unpause $name
case "$(state)" in *p*) fail "state after unpause: expected not paused, got $(state)" ;; esac

# chaos console hands over to xenconsole; without a terminal it only runs until timeout.
timeout 3 chaos console $name </dev/null >console.out 2>&1
echo "chaos console (3 s, no terminal): rc=$? output: $(head -c 300 console.out | tr -d '\r' | tr '\n' ' ')"
if out=$(chaos console no-such-guest 2>&1); then fail "chaos console of a missing guest: expected an error"; fi
expect_contains "console of a missing guest" "no domain" "$out"

start=$(now)
out=$(chaos shutdown -R -w --timeout 120 $name 2>&1) || fail "chaos shutdown -R -w: expected success, got: $out"
echo "reboot requested and handled in $(elapsed "$start")s"
# The guest's own /sbin/reboot ran (its marker), or at least its kernel restarted.
wait_for_line "$log" 'GUEST-REBOOT|reboot: Restarting system' 5 ||
	fail "console: expected the guest to reboot, got: $(tail -n 5 "$log")"
restarted() { domain_exists $name && [ "$(xl domid $name)" != "$first" ]; }
stayed_twice() { [ "$(grep -c GUEST-STAYING "$log")" -ge 2 ]; }
wait_until 60 restarted ||
	fail "on_reboot=restart: expected $name back as a new domain, xl list: $(xl list)"
second=$(xl domid $name)
echo "restarted as domain $second"
wait_until 150 stayed_twice ||
	fail "restarted guest: expected a second GUEST-STAYING, console: $(tail -n 5 "$log")"

start=$(now)
out=$(chaos shutdown -w --timeout 120 $name 2>&1) || fail "chaos shutdown -w: expected success, got: $out"
echo "poweroff requested and handled in $(elapsed "$start")s"
wait_gone $name 30 || fail "on_poweroff=destroy: expected $name gone, xl list: $(xl list)"
grep -qE 'GUEST-POWEROFF|reboot: Power down' "$log" ||
	fail "console: expected the guest to power off, got: $(tail -n 5 "$log")"
[ -z "$(ls /run/chaos/domains/)" ] || fail "state dir: expected empty, got: $(ls /run/chaos/domains/)"
