# chaos creates PV GRUB (Debian's grub-x86_64-xen.bin) several times in a row: every time its
# console reaches GRUB's prompt through xenconsoled. The console was once missed (the log stayed
# empty while GRUB ran); this is the proof it cannot be.
. "$XENLAB_TESTS/lib.sh"

runs=${PVGRUB_RUNS:-4}
grub=$GUEST/grub-x86_64-xen.bin
[ -f "$grub" ] || fail "PV GRUB: expected $grub, not found"

i=1
while [ "$i" -le "$runs" ]; do
	name=pvgrub-$i
	cat >"$name.cfg" <<-EOF2
	name = "$name"
	type = "pv"
	kernel = "$grub"
	memory = 32
	EOF2
	start=$(now)
	out=$(chaos create "$name.cfg" 2>&1) || fail "chaos create $name: expected success, got: $out"
	domid=$(xl domid "$name")
	log=$(console_log "$name")
	if ! wait_for_line "$log" 'grub>' 60; then
		fail "$name (domain $domid): expected 'grub>' on its console within 60s; log: $(ls -l "$log" 2>&1) $(tail -c 300 "$log" 2>&1); console in Xenstore: $(xenstore-ls "/local/domain/$domid/console" 2>&1 | tr '\n' ' '); xl list: $(xl list | tr '\n' ' ')"
	fi
	echo "$name (domain $domid): prompt after $(elapsed "$start")s"
	expect_ok "chaos destroy $name" chaos destroy "$name"
	i=$((i + 1))
done
