# xl with xendevd in place of the vif-bridge hotplug script (run_hotplug_scripts=0): a guest's
# vif lands on xenbr0 and is up, hotplug-status says connected (written by xendevd through
# libchaos's XsClient on xenstored's socket), and destroy leaves no port behind.
. "$XENLAB_TESTS/lib.sh"

command -v xendevd >/dev/null || fail "xendevd: expected in PATH, not found"
[ -d /sys/class/net/xenbr0/brif ] || fail "xenbr0: expected a Linux bridge, not found"

name=xdvif
pid=
cleanup() {
	xl destroy $name >/dev/null 2>&1
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	xl_conf_restore
}
trap cleanup EXIT
xl_hotplug_scripts 0

xendevd -v >xendevd.log 2>&1 &
pid=$!
wait_until 5 grep -q 'listening for vif uevents' xendevd.log ||
	fail "xendevd: expected to start listening, log: $(cat xendevd.log)"

cfg=$(pv_linux_cfg $name "vif = ['bridge=xenbr0']")
start=$(now)
out=$(xl create -p "$cfg" 2>&1) || fail "xl create -p: expected success, got: $out; xendevd log: $(cat xendevd.log)"
echo "xl create -p with one vif: $(elapsed "$start")s"
domid=$(xl domid $name) || fail "xl domid $name: expected a domid"
vif=vif$domid.0
be=/local/domain/0/backend/vif/$domid/0

connected() { [ "$(xenstore-read "$be/hotplug-status" 2>/dev/null)" = connected ]; }
wait_until 30 connected ||
	fail "$be/hotplug-status: expected connected, got '$(xenstore-read "$be/hotplug-status" 2>&1)' (hotplug-error: '$(xenstore-read "$be/hotplug-error" 2>&1)'); xendevd log: $(cat xendevd.log)"
echo "hotplug-status connected: $(elapsed "$start")s"
[ -e "/sys/class/net/xenbr0/brif/$vif" ] ||
	fail "xenbr0 ports: expected $vif, got '$(ls /sys/class/net/xenbr0/brif)'"
flags=$(cat "/sys/class/net/$vif/flags")
[ $((flags & 1)) -eq 1 ] || fail "$vif flags: expected IFF_UP set, got $flags"
expect_contains "xendevd log" "$vif online: attached to xenbr0" "$(cat xendevd.log)"
grep "$vif online" xendevd.log

xl destroy $name || fail "xl destroy $name: expected success"
gone() { [ ! -e "/sys/class/net/xenbr0/brif/$vif" ]; }
wait_until 10 gone || fail "xenbr0 ports after destroy: expected no $vif, got '$(ls /sys/class/net/xenbr0/brif)'"
echo "port gone after destroy: $(elapsed "$start")s"

kill -TERM $pid
wait $pid
rc=$?
pid=
expect_eq "xendevd exit status after SIGTERM" 0 "$rc"
if grep -q 'error' xendevd.log; then
	fail "xendevd log: expected no errors, got: $(grep error xendevd.log)"
fi
echo "xendevd log:"
cat xendevd.log
