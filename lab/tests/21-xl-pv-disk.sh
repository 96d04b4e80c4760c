# xl creates Debian's Linux as a PV guest whose root is the lab's ext4 disk image: first with
# Xen's block hotplug script (xl's default), then with xendevd in its place
# (run_hotplug_scripts=0). The disk's init prints DISK-HELLO (its root is /dev/xvda, ext4), the
# guest powers off, and the loop device over the image is gone with it.
. "$XENLAB_TESTS/lib.sh"

XENDEVD_PID=
cleanup() {
	xl destroy xldisk >/dev/null 2>&1
	xl destroy xldisk2 >/dev/null 2>&1
	stop_xendevd
	xl_conf_restore
}
trap cleanup EXIT
[ -f "$GUEST/disk.img" ] || fail "disk image: expected $GUEST/disk.img, not found"
img=$GUEST/disk.img
no_loops() { [ -z "$(loops_of "$1")" ]; }

# boot NAME LABEL: the guest reaches DISK-HELLO with its root on the disk, then goes, and no loop
# device is left over the image.
boot() {
	_cfg=$(disk_linux_cfg "$1" "$img,raw,xvda,r")
	_start=$(now)
	_out=$(xl create -q "$_cfg" 2>&1) || fail "$2: xl create: expected success, got: $_out"
	echo "$2: xl create with one disk: $(elapsed "$_start")s"
	_log=$(console_log "$1")
	wait_for_line "$_log" 'DISK-HELLO|DISK-FAIL' 150 ||
		fail "$2: expected DISK-HELLO within 150s, got: $(tail -n 8 "$_log" 2>&1)"
	_line=$(grep -E 'DISK-HELLO|DISK-FAIL' "$_log" | tr -d '\r')
	echo "$2: $_line ($(elapsed "$_start")s)"
	expect_contains "$2: the guest's root" "/dev/xvda / ext4 ro" "$_line"
	wait_gone "$1" 60 || fail "$2: expected the guest gone after poweroff, still there: $(xl list)"
	wait_until 30 no_loops "$img" || fail "$2: expected no loop device over $img after the guest, got: $(loops_of "$img")"
}

xl_hotplug_scripts 1
boot xldisk "xl + block script"

xl_hotplug_scripts 0
start_xendevd xendevd.log
boot xldisk2 "xl + xendevd"
grep -q 'backend/vbd/.*add: /dev/loop' xendevd.log ||
	fail "xendevd log: expected it to set up the loop device, got: $(cat xendevd.log)"
grep 'backend/vbd/' xendevd.log
