# Benchmark (passes when every creation succeeds): chaos against xl on this host, in this boot,
# creating the same guest paused and running, several runs each; prints medians and ratios.
# Guests: the noop unikernel and Debian's Linux kernel (destroyed right after creation).
. "$XENLAB_TESTS/lib.sh"

runs=${BENCH_RUNS:-5}
printf 'name = "bench"\nkernel = "%s/noop"\nmemory = 2\n' "$GUEST" >noop.cfg
mv "$(pv_linux_cfg bench)" linux.cfg

bash -s "$runs" <<'EOF_BASH' || fail "a creation failed (see above)"
runs=$1
usec() { local t=${EPOCHREALTIME/./}; echo "${t#0}"; }
median() { sort -n | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); print (NR % 2) ? v[m] : int((v[m] + v[m + 1]) / 2) }'; }
# one TOOL CFG FLAGS: create once (timed), destroy; prints microseconds
one() {
	local t0 t1 out
	t0=$(usec)
	out=$($1 create $3 "$2" 2>&1) || { echo "$1 create $3 $2 failed: $out" >&2; return 1; }
	t1=$(usec)
	xl destroy bench >/dev/null 2>&1 || { echo "no domain after $1 create: $out" >&2; return 1; }
	echo $((t1 - t0))
}
printf '%-7s %-8s %12s %12s %8s\n' guest mode "xl (ms)" "chaos (ms)" "xl/chaos"
for guest in noop linux; do
	for mode in paused running; do
		flags=""; [ $mode = paused ] && flags=-p
		: >xl.t; : >chaos.t
		for i in $(seq "$runs"); do
			# alternate the order so neither tool always runs on a warmer host
			for tool in xl chaos; do one $tool $guest.cfg "$flags" >>$tool.t || exit 1; done
		done
		x=$(median <xl.t); c=$(median <chaos.t)
		awk -v g=$guest -v m=$mode -v x="$x" -v c="$c" \
			'BEGIN { printf "%-7s %-8s %12.1f %12.1f %7.1fx\n", g, m, x / 1000, c / 1000, x / c }'
	done
done
EOF_BASH
