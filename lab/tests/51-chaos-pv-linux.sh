# chaos creates Debian's Linux kernel as a PV guest (uncompressed vmlinux and the marker
# initramfs): the marker shows on its console and the reaper destroys the domain after poweroff.
. "$XENLAB_TESTS/lib.sh"

chaos reap --watch >reaper.log 2>&1 &
reaper=$!
trap 'kill $reaper 2>/dev/null' EXIT

name=chaoslinux
cfg=$(pv_linux_cfg $name)
start=$(now)
out=$(chaos create "$cfg" 2>&1) || fail "chaos create: expected success, got: $out"
echo "chaos create: $(elapsed "$start")s: $out"
wait_for_line "$(console_log $name)" GUEST-HELLO 150 ||
	fail "guest console: expected GUEST-HELLO within 150s, got: $(tail -n 5 "$(console_log $name)" 2>&1)"
echo "marker seen: $(elapsed "$start")s: $(grep GUEST-HELLO "$(console_log $name)" | tr -d '\r')"
wait_gone $name 60 || fail "domain $name: expected gone after poweroff, still there: $(xl list)"
echo "domain gone: $(elapsed "$start")s"

# The same with Debian's vmlinuz as xl users pass it: a bzImage whose payload is xz.
name=chaoslinuz
cfg=$(pv_linux_cfg $name "kernel = \"$GUEST/vmlinuz\"")
start=$(now)
out=$(chaos create "$cfg" 2>&1) || fail "chaos create (vmlinuz): expected success, got: $out"
echo "chaos create (bzImage, xz): $(elapsed "$start")s: $out"
wait_for_line "$(console_log $name)" GUEST-HELLO 150 ||
	fail "guest console (vmlinuz): expected GUEST-HELLO within 150s, got: $(tail -n 5 "$(console_log $name)" 2>&1)"
wait_gone $name 60 || fail "domain $name: expected gone after poweroff, still there: $(xl list)"
echo "vmlinuz guest: marker seen and domain gone after $(elapsed "$start")s"
