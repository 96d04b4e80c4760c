# The same hello and noop ELF files (guests/) booted as PVH guests through their
# XEN_ELFNOTE_PHYS32_ENTRY: hello prints its line on the PV console (ring found through HVM
# params) and powers off; noop stays blocked using (almost) no CPU until destroyed.
# PVH loads the image at its physical address, 1 MiB (10 pages): 2 MiB is the least memory that
# boots (1 MiB fails in xc_dom_build_image).
. "$XENLAB_TESTS/lib.sh"

mem=${PVH_MEMORY:-2}

# pvh_cfg NAME KERNEL EXTRA: writes ./NAME.cfg and prints its path.
pvh_cfg() {
	cat >"$PWD/$1.cfg" <<-EOF2
	name = "$1"
	type = "pvh"
	tsc_mode = "native"
	kernel = "$GUEST/$2"
	extra = "$3"
	memory = $mem
	vcpus = 1
	on_poweroff = "destroy"
	on_reboot = "destroy"
	on_crash = "preserve"
	EOF2
	echo "$PWD/$1.cfg"
}

# hello: console line, then poweroff (reason code 0), then gone.
xl_log=/var/log/xen/xl-hellopvh.log
rm -f "$xl_log"
start=$(now)
out=$(xl create -q "$(pvh_cfg hellopvh hello "pvh words")" 2>&1) ||
	fail "xl create hellopvh (PVH, $mem MiB): expected success, got: $out"
echo "hellopvh: xl create PVH ${mem} MiB: $(elapsed "$start")s"
log=$(console_log hellopvh)
wait_for_line "$log" 'hello from chaos test guest' 60 ||
	fail "hellopvh console: expected the hello line within 60s, got: $(tail -n 3 "$log" 2>&1); xl list: $(xl list hellopvh 2>&1)"
line=$(grep 'hello from chaos test guest' "$log" | tail -n 1 | tr -d '\r')
echo "hellopvh: console: $line"
expect_contains "hellopvh console line" 'cmdline="pvh words"' "$line"
domid=$(echo "$line" | sed -n 's/.*domid=\([0-9][0-9]*\) .*/\1/p')
[ -n "$domid" ] || fail "hellopvh console line: expected domid=<number>, got: $line"
wait_for_line "$xl_log" "Domain $domid has shut down, reason code 0 " 60 ||
	fail "hellopvh: expected xl to see domain $domid power off (reason code 0), xl log: $(grep 'shut down' "$xl_log" 2>&1)"
echo "hellopvh: powered off: $(elapsed "$start")s"
wait_gone hellopvh 30 || fail "hellopvh: expected gone after poweroff, still there: $(xl list)"

# noop: idle.
cpu_time() { xl list nooppvh 2>/dev/null | awk 'NR == 2 { print $6 }'; }
start=$(now)
out=$(xl create -q "$(pvh_cfg nooppvh noop "")" 2>&1) ||
	fail "xl create nooppvh (PVH, $mem MiB): expected success, got: $out"
echo "nooppvh: xl create PVH ${mem} MiB: $(elapsed "$start")s"
sleep 2
t0=$(cpu_time)
[ -n "$t0" ] || fail "nooppvh: expected to be running 2s after create, xl list: $(xl list)"
sleep 6
t1=$(cpu_time)
state=$(xl list nooppvh 2>/dev/null | awk 'NR == 2 { print $5 }')
echo "nooppvh: state $state, cpu time $t0 s -> $t1 s over 6 s"
case "$state" in *c*) fail "nooppvh crashed: $(xl dmesg | tail -n 5)" ;; esac
expect_contains "nooppvh state (blocked)" b "$state"
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 0.5) }' ||
	fail "nooppvh cpu time: expected < 0.5 s more over 6 s idle, got $t0 -> $t1"
expect_ok "xl destroy nooppvh" xl destroy nooppvh
wait_gone nooppvh 30 || fail "nooppvh: expected gone after xl destroy: $(xl list)"
