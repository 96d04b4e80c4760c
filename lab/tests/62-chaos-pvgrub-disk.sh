# chaos boots a distro-style guest the way most Xen users do: PV GRUB (Debian's
# grub-x86_64-xen.bin, a PV kernel) with the lab's ext4 image as its disk. GRUB finds
# /boot/grub/grub.cfg on xvda, loads the disk's /boot/vmlinuz and initramfs, and that Linux
# mounts the same disk as its root and prints DISK-HELLO; the reaper destroys the guest after its
# poweroff and xendevd frees the loop device.
. "$XENLAB_TESTS/lib.sh"

reaper=
XENDEVD_PID=
cleanup() {
	chaos destroy pvgrubdisk >/dev/null 2>&1
	[ -n "$reaper" ] && kill "$reaper" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
grub=$GUEST/grub-x86_64-xen.bin
[ -f "$grub" ] || fail "PV GRUB: expected $grub, not found"
no_loops() { [ -z "$(loops_of "$1")" ]; }
start_xendevd xendevd.log
chaos reap --watch >reaper.log 2>&1 &
reaper=$!

img=$GUEST/disk.img
name=pvgrubdisk
cat >$name.cfg <<-EOF2
name = "$name"
type = "pv"
kernel = "$grub"
memory = 256
disk = [ '$img,raw,xvda,r' ]
on_poweroff = "destroy"
on_crash = "destroy"
EOF2
start=$(now)
out=$(chaos create $name.cfg 2>&1) || fail "chaos create (PV GRUB + disk): expected success, got: $out"
echo "chaos create: $(elapsed "$start")s: $out"
log=$(console_log $name)
wait_for_line "$log" 'DISK-INITRD|DISK-FAIL' 240 ||
	fail "expected GRUB to load the disk's kernel (DISK-INITRD on the console) within 240s, got: $(tail -c 600 "$log" 2>&1)"
echo "the disk's kernel runs: $(elapsed "$start")s: $(grep -E 'DISK-INITRD|DISK-FAIL' "$log" | tr -d '\r')"
wait_for_line "$log" 'DISK-HELLO|DISK-FAIL' 150 ||
	fail "expected DISK-HELLO within 150s more, got: $(tail -n 8 "$log" 2>&1)"
line=$(grep -E 'DISK-HELLO|DISK-FAIL' "$log" | tr -d '\r')
echo "$line ($(elapsed "$start")s)"
expect_contains "the guest's root" "/dev/xvda / ext4 ro" "$line"
grep -q 'GNU GRUB' "$log" || echo "note: no GRUB banner in the console log (timeout=0 may skip the menu)"
wait_gone $name 60 || fail "domain $name: expected gone after poweroff, still there: $(xl list)"
wait_until 30 no_loops "$img" || fail "expected no loop device over $img after the guest, got: $(loops_of "$img")"
echo "domain and loop device gone: $(elapsed "$start")s"
