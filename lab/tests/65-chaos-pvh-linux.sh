# chaos creates Debian's Linux as a PVH guest (type = "pvh", tsc_mode = "native"): with a vif
# (it pings dom0 through xendevd), then with its root on the lab's disk.
# Linux needs the ACPI tables chaos gives a PVH guest (libchaos/src/build/acpi.rs): without a
# MADT it never installs the Xen timer, time stands still and both cases hung in their init.
. "$XENLAB_TESTS/lib.sh"

reaper=
daemon=
XENDEVD_PID=
cleanup() {
	for n in c-hellopvh c-nooppvh c-poolpvh c-netpvh c-diskpvh; do chaos destroy "$n" >/dev/null 2>&1; done
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	[ -n "$reaper" ] && kill "$reaper" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
no_loops() { [ -z "$(loops_of "$1")" ]; }
chaos reap --watch >reaper.log 2>&1 &
reaper=$!

# 4. Debian's Linux as PVH with a vif: it pings dom0 through xenbr0 (xendevd attaches the vif).
start_xendevd xendevd.log
bridge_addr xenbr0 10.99.0.1/24
name=c-netpvh
cfg=$(pvh_guest_cfg $name "$GUEST/vmlinux" 256 "ramdisk = \"$GUEST/initrd-net.gz\"" \
	'extra = "console=hvc0 quiet guest_ip=10.99.0.4/24 peer=10.99.0.1"' "vif = ['bridge=xenbr0']")
start=$(now)
out=$(chaos create "$cfg" 2>&1) || fail "chaos create Linux (PVH, vif): expected success, got: $out"
echo "chaos create Linux (PVH, vif): $(elapsed "$start")s: $out"
log=$(console_log $name)
domid=$(chaos_domid $name) || fail "chaos list: expected $name"
# The vif's two ends as Xenstore has them (4 = connected).
vif_states() {
	echo "frontend state $(xenstore-read "/local/domain/$domid/device/vif/0/state" 2>&1), backend state $(xenstore-read "/local/domain/0/backend/vif/$domid/0/state" 2>&1), frontend error: $(xenstore-read "/local/domain/$domid/error/device/vif/0/error" 2>&1)"
}
wait_for_line "$log" 'PING-OK|PING-FAIL' 240 ||
	fail "Linux (PVH) console: expected PING-OK within 240s, got: $(tail -n 8 "$log" 2>&1); $(vif_states)"
grep -E 'GUEST-NET|PING-' "$log" | tr -d '\r'
grep -q PING-OK "$log" || fail "Linux (PVH) ping: expected PING-OK, got: $(grep PING-FAIL "$log" | tr -d '\r'); $(vif_states)"
wait_gone $name 60 || fail "$name: expected gone after poweroff: $(xl list)"
echo "Linux (PVH, vif): ping done and gone after $(elapsed "$start")s"


# 5. Debian's Linux as PVH with its root on the disk.
name=c-diskpvh
img=$GUEST/disk.img
cfg=$(pvh_guest_cfg $name "$GUEST/vmlinux" 256 "ramdisk = \"$GUEST/initrd-disk.gz\"" \
	'extra = "console=hvc0 quiet root=/dev/xvda"' "disk = ['$img,raw,xvda,r']")
start=$(now)
out=$(chaos create "$cfg" 2>&1) || fail "chaos create Linux (PVH, disk): expected success, got: $out"
log=$(console_log $name)
wait_for_line "$log" 'DISK-HELLO|DISK-FAIL' 240 ||
	fail "Linux (PVH, disk) console: expected DISK-HELLO within 240s, got: $(tail -n 8 "$log" 2>&1)"
line=$(grep -E 'DISK-HELLO|DISK-FAIL' "$log" | tr -d '\r')
echo "Linux (PVH, disk): $line ($(elapsed "$start")s)"
expect_contains "the guest's root" "/dev/xvda / ext4 ro" "$line"
wait_gone $name 60 || fail "$name: expected gone after poweroff: $(xl list)"
wait_until 30 no_loops "$img" || fail "expected no loop device over $img after the guest, got: $(loops_of "$img")"
