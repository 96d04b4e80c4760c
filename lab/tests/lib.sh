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
