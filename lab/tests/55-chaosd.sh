# chaosd on real Xen: the pool fills, `chaos create` takes ready shells through the daemon,
# the creation time of a noop guest is measured in this one boot (a) from a ready shell via
# chaosd, (b) by chaos alone (prepare + execute), (c) by xl, runs interleaved (a b c a b c ...)
# after one uncounted warm-up each, for 2 MiB (the LightVM noop) and 32 MiB (more memory to
# populate, which the pool does ahead of time); a killed chaosd's shells are reclaimed by the
# next one; a stopped chaosd leaves only Domain-0.
# shellcheck shell=bash # (it runs itself in bash, the line below)
[ -n "$BASH_VERSION" ] || exec bash "$0" "$@" # for $EPOCHREALTIME (µs)
. "$XENLAB_TESTS/lib.sh"

runs=${CHAOSD_RUNS:-7}
target=4 # per flavor
sizes="2 32"

for mib in $sizes; do
	printf 'name = "n"\nkernel = "%s/noop"\nmemory = %s\non_crash = "destroy"\n' "$GUEST" "$mib" >"noop$mib.cfg"
done
cp noop2.cfg noop.cfg

usec() { local t=${EPOCHREALTIME/./}; echo "${t#0}"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit; m = int((NR + 1) / 2); print (NR % 2) ? v[m] : int((v[m] + v[m + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

start_chaosd() {
	chaosd --flavor "memory=2,count=$target" --flavor "memory=32,count=$target" --reserve-mib 64 >>chaosd.log 2>&1 &
	daemon=$!
}
nflavors=2
# ready shells of all flavors, from `chaos pool status --json`
ready() { chaos pool status --json 2>/dev/null | grep -o '"ready":[0-9]*' | awk -F: '{ n += $2 } END { print n + 0 }'; }
# wait_full SECS: until every flavor is at its target
wait_full() {
	_deadline=$(awk -v n="$(now)" -v s="$1" 'BEGIN { print n + s }')
	until [ "$(ready)" = "$((target * nflavors))" ]; do
		awk -v n="$(now)" -v d="$_deadline" 'BEGIN { exit !(n > d) }' && return 1
		sleep 0.1
	done
}
stop_chaosd() {
	kill -TERM "$daemon" 2>/dev/null
	wait "$daemon"
}
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT

start=$(now)
start_chaosd
wait_full 180 || fail "pool: expected $target ready shells within 180s, got '$(ready)'; log: $(tail -n 5 chaosd.log)"
echo "chaosd: pool of $target filled in $(elapsed "$start")s"
all=$((target * nflavors))
expect_eq "shells in xl list" "$all" "$(guest_count)"
expect_eq "shells in chaos list" "$all" "$(chaos list | grep -c '(shell)')"
# shellcheck disable=SC2012 # counting files chaosd names (domids)
expect_eq "shell records" "$all" "$(ls /run/chaos/shells | wc -l)"

# chaos create -n through the pool
out=$(chaos create -n "$target" --pool-only noop.cfg 2>&1) || fail "create -n $target via chaosd: $out"
echo "$out"
expect_eq "creations via the pool" "$target" "$(echo "$out" | grep -c 'via the pool path (chaosd)')"
i=1
while [ $i -le "$target" ]; do
	state=$(xl list "n-$i" | awk 'NR == 2 { print $5 }')
	case "$state" in *p*) fail "n-$i: expected running, xl says $state" ;; esac
	expect_ok "destroy n-$i" chaos destroy "n-$i"
	i=$((i + 1))
done
wait_full 180 || fail "refill: expected $target ready shells again, got '$(ready)'"
chaos pool status

# one LABEL CREATE-CMD DESTROY-CMD RUN MIB: one timed creation; wall time (µs) to
# LABEL-MIB.wall, the tool's own total (chaos --json) to LABEL-MIB.own unless RUN is 0 (warm-up)
one() {
	local label=$1 create=$2 destroy=$3 run=$4 mib=$5 t0 t1 out own path
	if [ "$label" = pool ]; then
		wait_full 180 || fail "pool not refilled before $label run $run: ready '$(ready)'"
	fi
	t0=$(usec)
	out=$($create 2>&1) || fail "$label run $run: '$create' failed: $out"
	t1=$(usec)
	domain_exists n || fail "$label run $run: no domain n after: $out"
	own=$(echo "$out" | sed -n 's/.*"total_us":\([0-9]*\).*/\1/p')
	path=$(echo "$out" | sed -n 's/.*"path":"\([a-z]*\)".*"via":"\([a-z]*\)".*/\1 \2/p')
	if [ "$run" != 0 ]; then
		echo $((t1 - t0)) >>"$label-$mib.wall"
		[ -n "$own" ] && echo "$own" >>"$label-$mib.own"
	fi
	echo "  $mib MiB $label run $run: $(ms $((t1 - t0))) ms wall${own:+, $(ms "$own") ms inside chaos ($path)}"
	$destroy n >/dev/null 2>&1 || fail "$label run $run: destroy failed"
	wait_gone n 30 || fail "$label run $run: n still there after destroy"
}

for mib in $sizes; do
	for i in $(seq 0 "$runs"); do
		one pool "chaos create --pool-only --json noop$mib.cfg" "chaos destroy" "$i" "$mib"
		wait_full 180 || fail "pool not refilled after pool run $i"
		# (b) and (c) with the pool full and idle, so refills do not compete
		one direct "chaos create --local --json noop$mib.cfg" "chaos destroy" "$i" "$mib"
		one xl "xl create -q noop$mib.cfg" "xl destroy" "$i" "$mib"
	done
done

echo
echo "noop guest, $runs runs each (interleaved, after a warm-up), medians of wall time per command (Xen under QEMU TCG):"
for mib in $sizes; do
	pool=$(median <"pool-$mib.wall")
	direct=$(median <"direct-$mib.wall")
	xl=$(median <"xl-$mib.wall")
	pown=$(median <"pool-$mib.own")
	down=$(median <"direct-$mib.own")
	echo " $mib MiB:"
	printf '  %-34s %9s ms   (inside chaos: %s ms)\n' "(a) chaos via chaosd, ready shell" "$(ms "$pool")" "$(ms "$pown")"
	printf '  %-34s %9s ms   (inside chaos: %s ms)\n' "(b) chaos alone (prepare+execute)" "$(ms "$direct")" "$(ms "$down")"
	printf '  %-34s %9s ms\n' "(c) xl create" "$(ms "$xl")"
	echo "  ratios (wall): xl/pool $(ratio "$xl" "$pool")x, xl/direct $(ratio "$xl" "$direct")x, direct/pool $(ratio "$direct" "$pool")x; inside chaos: direct/pool $(ratio "$down" "$pown")x"
done
chaos pool status

# Shells destroyed behind chaosd's back (xl destroy) do not fail the next creation: chaosd
# passes over them to a live shell or creates directly. (The 2 MiB ones: the creation takes
# them all, so none is left in the pool for the reclaim below.)
for d in $(chaos list | awk '$1 == "(shell)" && $3 < 16 { print $2 }'); do
	xl destroy "$d" || fail "xl destroy shell $d"
done
out=$(chaos create -p noop2.cfg 2>&1) || fail "create after the shells were destroyed: expected success, got: $out"
domain_exists n || fail "create after the shells were destroyed: no domain n after: $out"
grep -q "is gone" chaosd.log || fail "chaosd log: expected the destroyed shell named, got: $(tail -n 3 chaosd.log)"
expect_ok "destroy n" chaos destroy n
wait_full 180 || fail "pool not refilled after its shells were destroyed: ready '$(ready)'"

# A chaosd killed without cleanup leaves shells; the next one reclaims them.
kill -KILL "$daemon"
wait "$daemon" 2>/dev/null
expect_eq "shells left by the killed chaosd" "$all" "$(guest_count)"
start_chaosd
wait_full 180 || fail "second chaosd: pool not filled"
reclaimed=$(chaos pool status --json | sed -n 's/.*"reclaimed":\([0-9]*\).*/\1/p')
expect_eq "shells reclaimed at start" "$all" "$reclaimed"
expect_eq "domains after reclaim + refill" "$all" "$(guest_count)"

stop_chaosd
trap - EXIT
expect_eq "domains after chaosd stopped" "Domain-0" "$(xl list | awk 'NR > 1 { print $1 }' | tr '\n' ' ' | sed 's/ $//')"
expect_eq "shell records after chaosd stopped" "" "$(ls /run/chaos/shells)"
[ -e /run/chaos/chaosd.sock ] && fail "socket: expected removed, still there"
grep -q "destroyed $all unused shell" chaosd.log || fail "chaosd log: expected 'destroyed $all unused shell(s)', got: $(tail -n 3 chaosd.log)"
true
