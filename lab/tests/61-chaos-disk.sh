# chaos creates guests with disks, served by Linux blkback with xendevd in place of the block
# hotplug script:
# 1. one image file read-only in three paused guests (a loop device each, read-only); a fourth
#    guest asking for it read-write gets no device (hotplug-status error, the reason said);
#    destroying them frees every loop device and leaves no backend directory;
# 2. a block device (phy:) is served as it is, with no loop device of xendevd's;
# 3. a creation that fails leaves no backend directory and no loop device;
# 4. Debian's Linux with its root on a copy of the lab's ext4 image, read-write: it writes a
#    token to the disk, powers off, the reaper destroys it, and the token is in the image file.
. "$XENLAB_TESTS/lib.sh"

reaper=
XENDEVD_PID=
held=
cleanup() {
	for n in ro1 ro2 ro3 rw4 phy; do chaos destroy "$n" >/dev/null 2>&1; done
	chaos destroy chaosdisk >/dev/null 2>&1
	[ -n "$held" ] && losetup -d "$held" 2>/dev/null
	[ -n "$reaper" ] && kill "$reaper" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log
[ -e /dev/loop-control ] || fail "/dev/loop-control: expected (loop.ko loaded by dom0's init)"

backend() { echo "/local/domain/0/backend/vbd/$(xl domid "$1")/51712"; }
status() { xenstore-read "$(backend "$1")/hotplug-status" 2>/dev/null; }
has_status() { [ "$(status "$1")" = "$2" ]; }
no_loops() { [ -z "$(loops_of "$1")" ]; }

# noop_cfg NAME DISKSPEC: a paused-friendly unikernel guest with one disk.
noop_cfg() {
	printf 'name = "%s"\nkernel = "%s/noop"\nmemory = 2\ndisk = [ %s ]\n' "$1" "$GUEST" "$2" >"$1.cfg"
	echo "$PWD/$1.cfg"
}

# 1. Read-only sharing.
cp "$GUEST/disk.img" shared.img
img=$PWD/shared.img
for n in ro1 ro2 ro3; do
	out=$(chaos create -p "$(noop_cfg $n "'$img,raw,xvda,r'")" 2>&1) || fail "chaos create $n: expected success, got: $out"
done
for n in ro1 ro2 ro3; do
	wait_until 30 has_status $n connected || fail "$n: expected hotplug-status connected, got '$(status $n)'; xendevd: $(tail -n 5 xendevd.log)"
	be=$(backend $n)
	node=$(xenstore-read "$be/node")
	dev=${node#/dev/}
	expect_eq "$n: the loop device's file" "$img" "$(cat "/sys/block/$dev/loop/backing_file")"
	expect_eq "$n: the loop device is read-only" 1 "$(cat "/sys/block/$dev/ro")"
	expect_eq "$n: physical-device" "$(printf '7:%x' "${dev#loop}")" "$(xenstore-read "$be/physical-device")"
	expect_eq "$n: mode" r "$(xenstore-read "$be/mode")"
	echo "$n: $be -> $node ($(xenstore-read "$be/physical-device"))"
done
expect_eq "loop devices over the shared image" 3 "$(loops_of "$img" | wc -l)"
out=$(chaos create -p "$(noop_cfg rw4 "'$img,raw,xvda,w'")" 2>&1) || fail "chaos create rw4: expected success, got: $out"
wait_until 30 has_status rw4 error || fail "rw4: expected hotplug-status error (the image is in use read-only), got '$(status rw4)'"
reason=$(xenstore-read "$(backend rw4)/hotplug-error")
echo "rw4 refused: $reason"
expect_contains "rw4's hotplug-error" "in use read-only by domain" "$reason"
expect_eq "loop devices after the refused writer" 3 "$(loops_of "$img" | wc -l)"
domids=
for n in ro1 ro2 ro3 rw4; do
	domids="$domids $(xl domid $n)"
	expect_ok "chaos destroy $n" chaos destroy $n
done
wait_until 30 no_loops "$img" || fail "expected no loop device over $img after the destroys, got: $(loops_of "$img")"
for d in $domids; do
	xenstore-exists "/local/domain/0/backend/vbd/$d" && fail "backend/vbd/$d: expected removed by destroy"
done
grep 'backend/vbd/' xendevd.log

# 2. A block device as it is: a loop device of this test's stands in for a partition.
held=$(losetup -f) || fail "losetup -f: no free loop device"
losetup "$held" "$img" || fail "losetup $held $img: could not set up a block device"
out=$(chaos create -p "$(noop_cfg phy "'phy:$held,xvda,w'")" 2>&1) || fail "chaos create phy: expected success, got: $out"
wait_until 30 has_status phy connected || fail "phy: expected hotplug-status connected, got '$(status phy)'"
be=$(backend phy)
n=${held#/dev/loop}
expect_eq "phy: physical-device of $held" "$(printf '7:%x' "$n")" "$(xenstore-read "$be/physical-device")"
xenstore-exists "$be/node" && fail "phy: expected no loop device of xendevd's (no node), got $(xenstore-read "$be/node")"
expect_eq "loop devices over the image (only the test's own)" 1 "$(loops_of "$img" | wc -l)"
expect_ok "chaos destroy phy" chaos destroy phy
losetup -d "$held" && held=

# 3. A failed creation (a kernel that is not one) with a disk leaves nothing.
echo 'not a kernel' >notakernel
printf 'name = "bad"\nkernel = "%s/notakernel"\nmemory = 2\ndisk = [ "%s,raw,xvda,r" ]\n' "$PWD" "$img" >bad.cfg
if out=$(chaos create bad.cfg 2>&1); then fail "chaos create with a text file as kernel: expected an error, it succeeded"; fi
echo "failed creation: $out"
[ -z "$(xenstore-ls /local/domain/0/backend/vbd 2>/dev/null)" ] ||
	fail "after the failed creation: expected no vbd backends, got: $(xenstore-ls /local/domain/0/backend/vbd)"
[ -z "$(loops_of "$img")" ] || fail "after the failed creation: expected no loop device, got: $(loops_of "$img")"

# 4. Linux with its root on the disk, read-write.
chaos reap --watch >reaper.log 2>&1 &
reaper=$!
cp "$GUEST/disk.img" root.img
token=chaos-disk-$$-$(cut -d' ' -f1 /proc/uptime | tr -d .)
name=chaosdisk
cfg=$(disk_linux_cfg $name "$PWD/root.img,raw,xvda,w" "extra = \"console=hvc0 quiet root=/dev/xvda rw disk_write=$token\"")
start=$(now)
out=$(chaos create "$cfg" 2>&1) || fail "chaos create (Linux, root on disk): expected success, got: $out"
echo "chaos create with one disk: $(elapsed "$start")s: $out"
log=$(console_log $name)
wait_for_line "$log" 'DISK-WRITTEN|DISK-FAIL' 150 ||
	fail "guest console: expected DISK-WRITTEN within 150s, got: $(tail -n 8 "$log" 2>&1); xendevd: $(tail -n 5 xendevd.log)"
grep -E 'DISK-' "$log" | tr -d '\r'
expect_contains "the guest's root" "/dev/xvda / ext4 rw" "$(grep DISK-HELLO "$log")"
grep -q "DISK-WRITTEN $token" "$log" || fail "guest console: expected DISK-WRITTEN $token, got: $(grep DISK- "$log")"
wait_gone $name 60 || fail "domain $name: expected gone after poweroff, still there: $(xl list)"
echo "domain gone: $(elapsed "$start")s"
wait_until 30 no_loops "$PWD/root.img" || fail "expected no loop device over root.img after the guest, got: $(loops_of "$PWD/root.img")"
grep -q "$token" root.img || fail "root.img: expected the guest's token $token in the image file"
echo "the token the guest wrote is in root.img"
