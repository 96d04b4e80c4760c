# The same network guest as 75, created by xl with xendevd in place of the vif-bridge hotplug
# script (run_hotplug_scripts=0): the guest pings dom0 through xenbr0, and the vif goes away with
# the guest.
. "$XENLAB_TESTS/lib.sh"

[ -d /sys/class/net/xenbr0/brif ] || fail "xenbr0: expected a Linux bridge, not found"
name=xlping
XENDEVD_PID=
cleanup() {
	xl destroy $name >/dev/null 2>&1
	stop_xendevd
	xl_conf_restore
}
trap cleanup EXIT
xl_hotplug_scripts 0
start_xendevd xendevd.log
bridge_addr xenbr0 10.99.0.1/24

cfg=$(net_linux_cfg $name 10.99.0.4/24 10.99.0.1 "vif = ['bridge=xenbr0,ip=10.99.0.4']")
start=$(now)
out=$(xl create "$cfg" 2>&1) || fail "xl create: expected success, got: $out; xendevd log: $(cat xendevd.log)"
domid=$(xl domid $name) || fail "xl domid $name: expected a domid"
echo "xl create: $(elapsed "$start")s, domain $domid"
be=/local/domain/0/backend/vif/$domid/0
expect_eq "$be/hotplug-status (xl waited for it)" connected "$(xenstore-read "$be/hotplug-status" 2>&1)"
[ -e "/sys/class/net/xenbr0/brif/vif$domid.0" ] ||
	fail "xenbr0 ports: expected vif$domid.0, got '$(ls /sys/class/net/xenbr0/brif)'"
log=$(console_log $name)
wait_for_line "$log" 'PING-OK|PING-FAIL' 240 ||
	fail "guest console: expected PING-OK within 240s, got: $(tail -n 5 "$log" 2>&1)"
grep -E 'GUEST-NET|packets|round-trip|PING-' "$log" | tr -d '\r'
grep -q PING-OK "$log" || fail "guest ping: expected PING-OK, got: $(grep PING-FAIL "$log" | tr -d '\r')"
wait_gone $name 60 || fail "domain $name: expected gone after poweroff, still there: $(xl list)"
gone() { [ ! -e "/sys/class/net/vif$domid.0" ]; }
wait_until 30 gone || fail "/sys/class/net: expected no vif$domid.0 after the guest is gone, still there"
echo "guest gone, vif$domid.0 gone: $(elapsed "$start")s"
grep "vif$domid.0" xendevd.log
if grep -q 'error' xendevd.log; then
	fail "xendevd log: expected no errors, got: $(grep error xendevd.log)"
fi
