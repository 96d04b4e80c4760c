# Helpers for lab tests (POSIX sh, busybox). Source it:  . "$XENLAB_TESTS/lib.sh"
# A test is a script run in dom0 from its own empty work dir; exit 0 = pass. Say what was expected
# and what was seen when failing: the helpers below print "FAIL: WHAT: expected X, got Y".

GUEST=${XENLAB_GUEST:-/guest}

# Seconds since dom0 boot, 10 ms resolution (busybox date has no %N).
now() { cut -d' ' -f1 /proc/uptime; }

# Seconds elapsed since START (a value of `now`), two decimals.
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }'; }

# Print a failure message and exit the test.
fail() {
	echo "FAIL: $*"
	exit 1
}

# expect_eq WHAT EXPECTED GOT: fails the test unless GOT = EXPECTED.
expect_eq() {
	[ "$3" = "$2" ] || fail "$1: expected '$2', got '$3'"
}

# expect_contains WHAT NEEDLE HAYSTACK: fails the test unless HAYSTACK contains NEEDLE.
expect_contains() {
	case "$3" in
	*"$2"*) ;;
	*) fail "$1: expected to contain '$2', got '$3'" ;;
	esac
}

# expect_ok WHAT CMD...: runs CMD; fails the test with its output if it exits non-zero.
expect_ok() {
	what=$1
	shift
	out=$("$@" 2>&1) || fail "$what: expected '$*' to succeed, it failed (rc=$?): $out"
}

# Path of the xenconsoled log of guest NAME.
console_log() { echo "/var/log/xen/console/guest-$1.log"; }

# True if a domain called NAME exists.
domain_exists() { xl domid "$1" >/dev/null 2>&1; }

# Number of domains besides Domain-0.
guest_count() { xl list | awk 'NR > 2' | wc -l; }

# wait_gone NAME SECS: waits until domain NAME is gone; returns 1 if it still exists after SECS.
wait_gone() {
	_deadline=$(awk -v n="$(now)" -v s="$2" 'BEGIN { print n + s }')
	while domain_exists "$1"; do
		awk -v n="$(now)" -v d="$_deadline" 'BEGIN { exit !(n > d) }' && return 1
		sleep 0.1
	done
	return 0
}

# wait_for_line FILE PATTERN SECS: waits until FILE has a line matching PATTERN (grep -E);
# returns 1 after SECS without it.
wait_for_line() {
	_deadline=$(awk -v n="$(now)" -v s="$3" 'BEGIN { print n + s }')
	until grep -qE "$2" "$1" 2>/dev/null; do
		awk -v n="$(now)" -v d="$_deadline" 'BEGIN { exit !(n > d) }' && return 1
		sleep 0.1
	done
	return 0
}

# pv_linux_cfg NAME [EXTRA_LINE...]: writes ./NAME.cfg for Debian's kernel as a PV guest with the
# marker initramfs (prints GUEST-HELLO, powers off) and prints its path.
pv_linux_cfg() {
	_name=$1
	shift
	{
		echo "name = \"$_name\""
		echo 'type = "pv"'
		echo "kernel = \"$GUEST/vmlinux\""
		echo "ramdisk = \"$GUEST/initrd.gz\""
		echo 'extra = "console=hvc0 quiet"'
		echo 'memory = 128'
		echo 'vcpus = 1'
		echo 'on_poweroff = "destroy"'
		echo 'on_crash = "destroy"'
		for _l in "$@"; do echo "$_l"; done
	} >"$PWD/$_name.cfg"
	echo "$PWD/$_name.cfg"
}

# net_linux_cfg NAME GUEST_IP/PREFIX PEER [EXTRA_LINE...]: like pv_linux_cfg, with the network
# initramfs (loads netfront, sets GUEST_IP on eth0, pings PEER, prints PING-OK or PING-FAIL,
# powers off). Add the vif line as an EXTRA_LINE.
net_linux_cfg() {
	_ip=$2 _peer=$3
	_n=$1
	shift 3
	# Later settings override earlier ones, as in xl.
	pv_linux_cfg "$_n" "ramdisk = \"$GUEST/initrd-net.gz\"" \
		"extra = \"console=hvc0 quiet guest_ip=$_ip peer=$_peer\"" "$@"
}

# disk_linux_cfg NAME DISKSPEC [EXTRA_LINE...]: like pv_linux_cfg, with the disk initramfs (loads
# blkfront and ext4, mounts root= read-only, or read-write with `rw` in extra) and disk = [DISKSPEC];
# the lab's disk image ($GUEST/disk.img) has an init that prints DISK-HELLO and powers off
# (with disk_write=TOKEN in extra, it writes TOKEN to the disk first and prints DISK-WRITTEN).
disk_linux_cfg() {
	_n=$1 _spec=$2
	shift 2
	pv_linux_cfg "$_n" "ramdisk = \"$GUEST/initrd-disk.gz\"" \
		"extra = \"console=hvc0 quiet root=/dev/xvda\"" "disk = ['$_spec']" "$@"
}

# loops_of FILE: the loop devices (loopN, one per line) bound to FILE, from sysfs.
loops_of() {
	for _b in /sys/block/loop*/loop/backing_file; do
		[ -f "$_b" ] && [ "$(cat "$_b")" = "$1" ] && basename "$(dirname "$(dirname "$_b")")"
	done
	return 0
}

# wait_until SECS CMD...: polls CMD every 0.05 s; returns 1 if it never succeeds within SECS.
wait_until() {
	_deadline=$(awk -v n="$(now)" -v s="$1" 'BEGIN { print n + s }')
	shift
	until "$@"; do
		awk -v n="$(now)" -v d="$_deadline" 'BEGIN { exit !(n > d) }' && return 1
		sleep 0.05
	done
	return 0
}

# start_xendevd LOG: starts xendevd -v in the background, logging to LOG; sets XENDEVD_PID.
start_xendevd() {
	command -v xendevd >/dev/null || fail "xendevd: expected in PATH, not found"
	xendevd -v >"$1" 2>&1 &
	# shellcheck disable=SC2034 # for the tests that source this file
	XENDEVD_PID=$!
	wait_until 5 grep -q 'listening for vif uevents' "$1" ||
		fail "xendevd: expected to start listening, log: $(cat "$1")"
}

# stop_xendevd: stops the xendevd of start_xendevd and waits until it has exited (SIGKILL after
# 10 s), so that the next test's xendevd finds the socket free ("another xendevd serves it").
stop_xendevd() {
	[ -n "${XENDEVD_PID:-}" ] || return 0
	kill "$XENDEVD_PID" 2>/dev/null
	(sleep 10 && kill -9 "$XENDEVD_PID" 2>/dev/null) &
	_watchdog=$!
	wait "$XENDEVD_PID" 2>/dev/null
	kill "$_watchdog" 2>/dev/null
	XENDEVD_PID=
}

# bridge_addr BRIDGE ADDR/PREFIX: gives the bridge an address (once).
bridge_addr() {
	ip addr show dev "$1" | grep -q "inet ${2%/*}/" || ip addr add "$2" dev "$1" ||
		fail "ip addr add $2 dev $1 failed"
}

# xl_hotplug_scripts 0|1: sets run_hotplug_scripts in /etc/xen/xl.conf (0: xl runs no vif-bridge
# script, xendevd does the work). The first call keeps the original in ./xl.conf.orig;
# xl_conf_restore puts it back (call it from the test's EXIT trap).
xl_hotplug_scripts() {
	[ -f xl.conf.orig ] || { if [ -f /etc/xen/xl.conf ]; then cp /etc/xen/xl.conf xl.conf.orig; else : >xl.conf.orig; fi; }
	{
		grep -v '^[[:space:]]*run_hotplug_scripts' xl.conf.orig
		echo "run_hotplug_scripts=$1"
	} >/etc/xen/xl.conf
}
xl_conf_restore() { [ -f xl.conf.orig ] && cp xl.conf.orig /etc/xen/xl.conf; }

# Xenstore request counts, from xenstored's trace (boot with XENLAB_XS_TRACE=1). The trace has a
# line "CREATE connection 0xADDR" per new client connection and "IN 0xADDR DATE TIME TYPE (ARGS)"
# per request; the kernel's own connection (and, through /dev/xen/xenbus, its users') and
# xenconsoled's were opened at boot. Addresses are reused after a connection closes.
#   m=$(xs_trace_mark); xl create -p guest.cfg; xs_trace_count_since "$m" new
XS_TRACE_LOG=/var/log/xenstored-trace.log

# xs_trace_mark: prints a mark (the trace's length in lines) for the functions below.
xs_trace_mark() {
	[ -f "$XS_TRACE_LOG" ] || fail "xenstored trace: expected $XS_TRACE_LOG (boot with XENLAB_XS_TRACE=1), none"
	wc -l <"$XS_TRACE_LOG"
}

# xs_trace_by_conn_since MARK: one line per connection that made requests since MARK:
# "0xADDR REQUESTS new|old" (new: opened after MARK, i.e. by a process started since).
xs_trace_by_conn_since() {
	awk -v mark="$1" '
		$1 == "CREATE" && $2 == "connection" { key[$3] = $3 (NR > mark ? " new " NR : " old"); next }
		NR > mark && $1 == "IN" { k = ($2 in key) ? key[$2] : $2 " old"; n[k]++; if (!(k in seen)) { seen[k] = 1; order[++c] = k } }
		END { for (i = 1; i <= c; i++) { split(order[i], f, " "); print f[1], n[order[i]], f[2] } }
	' "$XS_TRACE_LOG"
}

# xs_trace_count_since MARK [new]: the number of Xenstore requests since MARK; with `new`, only
# those on connections opened since MARK (not the kernel's or xenconsoled's).
xs_trace_count_since() {
	xs_trace_by_conn_since "$1" | awk -v only="${2:-}" 'only == "" || $3 == only { s += $2 } END { print s + 0 }'
}

# --- NoXS guests (chaos_control_plane = "noxs"). They have no Xenstore name, so xl cannot find
# them by name: chaos can.

# noxs_cfg NAME KERNEL [EXTRA_CFG_LINE...]: writes ./NAME.cfg (a 2 MiB PV NoXS guest of
# /guest/KERNEL) and prints its path.
noxs_cfg() {
	_n=$1 _k=$2
	shift 2
	{
		echo "name = \"$_n\""
		echo "kernel = \"$XENLAB_GUEST/$_k\""
		echo "memory = 2"
		echo "chaos_control_plane = \"noxs\""
		for _l in "$@"; do echo "$_l"; done
	} >"$PWD/$_n.cfg"
	echo "$PWD/$_n.cfg"
}

# chaos_has NAME: chaos lists a domain called NAME.
chaos_has() { chaos list | awk -v n="$1" '$1 == n { f = 1 } END { exit !f }'; }

# chaos_domid NAME: its domid, from chaos list.
chaos_domid() { chaos list | awk -v n="$1" '$1 == n { print $2; f = 1 } END { exit !f }'; }

# wait_gone_chaos NAME SECS: like wait_gone, through chaos list.
wait_gone_chaos() {
	_end=$(awk -v n="$(now)" -v s="$2" 'BEGIN { print n + s }')
	while chaos_has "$1"; do
		awk -v n="$(now)" -v d="$_end" 'BEGIN { exit !(n > d) }' && return 1
		sleep 0.2
	done
}

# dom0_evtchns PROCESS: event channels PROCESS bound through /dev/xen/evtchn (/proc/interrupts
# names them evtchn:PROCESS).
dom0_evtchns() { grep -c "evtchn:$1" /proc/interrupts || true; }

# gntdev_maps PID: grant mappings the process holds (its /dev/xen/gntdev mappings).
# (grep -c prints 0 and fails when there is none: one number either way)
gntdev_maps() {
	_n=$(grep -c '/dev/xen/gntdev' "/proc/$1/maps" 2>/dev/null)
	echo "${_n:-0}"
}

# xs_trace_on FILE: xenstored logs every request to FILE from now on (C xenstored, at run time);
# xs_trace_off stops. The xs_trace_* counters read $XS_TRACE_LOG.
xs_trace_on() {
	if ! { xenstore-control logfile "$1" >/dev/null && xenstore-control log on >/dev/null; }; then
		fail "xenstore-control: cannot turn on xenstored's trace"
	fi
	XS_TRACE_LOG=$1
}
xs_trace_off() { xenstore-control log off >/dev/null 2>&1 || true; }

# --- PVH guests (the lab's tsc settings: QEMU's nested SVM has no next-RIP for RDTSC intercepts)

# pvh_guest_cfg NAME KERNEL MEMORY [EXTRA_LINE...]: writes ./NAME.cfg (a PVH guest, destroyed
# on poweroff and crash) and prints its path.
pvh_guest_cfg() {
	_n=$1 _k=$2 _m=$3
	shift 3
	{
		echo "name = \"$_n\""
		echo 'type = "pvh"'
		echo 'tsc_mode = "native"'
		echo "kernel = \"$_k\""
		echo "memory = $_m"
		echo 'on_poweroff = "destroy"'
		echo 'on_crash = "destroy"'
		for _l in "$@"; do echo "$_l"; done
	} >"$PWD/$_n.cfg"
	echo "$PWD/$_n.cfg"
}
