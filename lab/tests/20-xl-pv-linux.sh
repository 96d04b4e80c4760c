# xl creates Debian's Linux kernel as a PV guest; its initramfs prints GUEST-HELLO and powers off.
. "$XENLAB_TESTS/lib.sh"

name=pvlinux
cfg=$(pv_linux_cfg $name)
start=$(now)
out=$(xl create -q "$cfg" 2>&1) || fail "xl create: expected success, got: $out"
echo "xl create: $(elapsed "$start")s"

wait_for_line "$(console_log $name)" GUEST-HELLO 120 ||
	fail "guest console: expected GUEST-HELLO within 120s, got: $(tail -n 5 "$(console_log $name)" 2>&1)"
echo "marker seen: $(elapsed "$start")s: $(grep GUEST-HELLO "$(console_log $name)")"

wait_gone $name 60 || fail "domain $name: expected gone after poweroff, still there: $(xl list)"
echo "domain gone: $(elapsed "$start")s"
