# Benchmark: what one creation costs, in counts that noise does not blur (docs/COSTS.md). A 2 MiB
# noop created paused, then destroyed, by xl, by chaos on the Xenstore plane and on NoXS (each
# alone, prepare + execute) and through chaosd's ready shells, plain and warm (both planes). Per creation: the
# command's system calls and ioctls (strace -f -c; for chaosd rows that is the client only),
# chaos's own count of its hypercalls and Xenstore requests (`--json` costs; through chaosd, the
# daemon's execute), Xenstore requests seen by xenstored (its trace; `new` = connections the
# command opened, `all` = every connection, the daemons' too), and the command's CPU time and
# page faults (busybox time). Counts are the same run after run; times are medians of 3.
. "$XENLAB_TESTS/lib.sh"

RUNS=3
XENDEVD_PID=
CHAOSD_PID=
REAPER_PID=
cleanup() {
	xs_trace_off
	[ -n "$CHAOSD_PID" ] && kill "$CHAOSD_PID" 2>/dev/null && wait "$CHAOSD_PID" 2>/dev/null
	for n in cost-xs cost-nx; do chaos destroy "$n" >/dev/null 2>&1; xl destroy "$n" >/dev/null 2>&1; done
	kill "$REAPER_PID" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log
# A reaper that outlives the commands (chaos create would start one, and strace -f would wait for
# it); xl gets -e for the same reason (no monitor process left behind).
chaos reap --watch >reaper.log 2>&1 &
REAPER_PID=$!
printf 'name = "cost-xs"\nkernel = "%s/noop"\nmemory = 2\n' "$XENLAB_GUEST" >cost-xs.cfg
noxs_cfg cost-nx noop >/dev/null
xs_trace_on "$PWD/xs-trace.log"

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
# calls_of FILE SYSCALL: the calls column of strace -c's line for SYSCALL ("total" for all).
# The columns have fixed widths and may be blank, so the number is cut where the header's
# "calls" ends.
calls_of() {
	awk -v s="$2" '/^% time/ { end = index($0, "calls") + 4 } end && $NF == s { n = substr($0, end - 8, 9) + 0 } END { print n + 0 }' "$1"
}
json_num() { echo "$2" | sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p"; }
hypercalls_in() { echo "$1" | sed -n 's/.*"hypercalls":{\([^}]*\)}.*/\1/p' | tr ',' '\n' | sed 's/.*://' | awk '{ s += $1 } END { print s + 0 }'; }
# ready_shells N: chaosd has N ready shells of each of its two flavors
ready_shells() { [ "$(chaos pool status --json 2>/dev/null | grep -o "\"ready\":$1,\"target\":$1" | wc -l)" -ge 2 ]; }

# row LABEL NAME DESTROYER CREATE-COMMAND...: one warm-up, then RUNS measured creations.
row() {
	_label=$1 _name=$2 _destroy=$3
	shift 3
	"$@" >warmup.out 2>&1 || fail "$_label: $*: expected success, got: $(cat warmup.out); chaosd: $(tail -n 3 chaosd*.log 2>/dev/null)"
	$_destroy destroy "$_name" >/dev/null 2>&1
	: >times.txt
	for _i in $(seq "$RUNS"); do
		[ -n "$CHAOSD_PID" ] && { wait_until 60 ready_shells 2 || fail "$_label: chaosd did not refill"; }
		_m=$(xs_trace_mark)
		busybox time -f '%e %U %S %F %R' -o time.out strace -f -c -o strace.out "$@" >out.json 2>create.err ||
			fail "$_label: $*: expected success, got: $(cat create.err out.json)"
		_new=$(xs_trace_count_since "$_m" new)
		_all=$(xs_trace_count_since "$_m")
		$_destroy destroy "$_name" >/dev/null 2>&1 || fail "$_label: $_destroy destroy $_name failed"
		tail -n 1 time.out >>times.txt
	done
	_out=$(cat out.json)
	_hc=- _xs=- _inside=-
	if [ -n "$(json_num total_us "$_out")" ]; then
		_hc=$(hypercalls_in "$_out")
		_xs=$(json_num xenstore_requests "$_out")
		_inside=$(awk -v us="$(json_num total_us "$_out")" 'BEGIN { printf "%.1f", us / 1000 }')
		echo "COSTS-KINDS $_label $(echo "$_out" | sed -n 's/.*"hypercalls":{\([^}]*\)}.*/\1/p')"
	fi
	_wall=$(awk '{ print $1 }' times.txt | median)
	_cpu=$(awk '{ printf "%.0f\n", ($2 + $3) * 1000 }' times.txt | median)
	_minflt=$(awk '{ print $5 }' times.txt | median)
	printf 'COSTS-TABLE | %s | %s | %s | %s | %s | %s/%s | %s | %s | %s |\n' "$_label" \
		"$(calls_of strace.out total)" "$(calls_of strace.out ioctl)" "$_hc" "$_xs" "$_new" "$_all" \
		"$_cpu" "$_minflt" "$_inside"
	[ "$_wall" ] || fail "$_label: no time measured"
}

echo "COSTS-TABLE | creation (2 MiB noop, paused) | syscalls | ioctls | chaos hypercalls | chaos Xenstore requests | xenstored saw (new/all) | CPU ms | minor faults | inside chaos ms |"
row "xl" cost-xs xl xl create -p -e cost-xs.cfg
row "chaos, Xenstore" cost-xs chaos chaos create --local -p --json cost-xs.cfg
row "chaos, NoXS" cost-nx chaos chaos create --local -p --json "$PWD/cost-nx.cfg"

chaosd --flavor config=cost-xs.cfg,count=2 --flavor "config=$PWD/cost-nx.cfg,count=2" --reserve-mib 64 >chaosd.log 2>&1 &
CHAOSD_PID=$!
wait_until 120 ready_shells 2 || fail "chaosd: expected 2 ready shells of each flavor, got: $(chaos pool status 2>&1 | tail -n 4)"
row "chaos via chaosd, Xenstore" cost-xs chaos chaos create --pool-only -p --json cost-xs.cfg
row "chaos via chaosd, NoXS" cost-nx chaos chaos create --pool-only -p --json "$PWD/cost-nx.cfg"
# What an orchestrator that keeps its connection sees: request to reply against inside time.
if command -v daemon-rtt >/dev/null; then
	for c in cost-xs cost-nx; do
		out=$(daemon-rtt /run/chaos/chaosd.sock "$PWD/$c.cfg" 5 2>&1) || fail "daemon-rtt $c: $out"
		echo "$c: $(echo "$out" | grep DAEMON-RTT)"
	done
fi
# The floor under it: a round trip between two processes that do nothing but a 3 ms busy wait
# in the server (about a warm creation's inside time), so both sides block as chaos's do.
if command -v socket-floor >/dev/null; then
	out=$(socket-floor 21 3000 2>&1) || fail "socket-floor: $out"
	echo "socket floor: $(echo "$out" | grep SOCKET-FLOOR)"
fi

kill -TERM "$CHAOSD_PID"
wait "$CHAOSD_PID"
chaosd --flavor "config=$PWD/cost-xs.cfg,count=2,warm=1" --flavor "config=$PWD/cost-nx.cfg,count=2,warm=1" \
	--reserve-mib 64 >chaosd-warm.log 2>&1 &
CHAOSD_PID=$!
wait_until 120 ready_shells 2 || fail "chaosd: expected 2 warm shells of each flavor, got: $(chaos pool status 2>&1 | tail -n 4)"
row "chaos via chaosd, warm, Xenstore" cost-xs chaos chaos create --pool-only -p --json cost-xs.cfg
row "chaos via chaosd, warm, NoXS" cost-nx chaos chaos create --pool-only -p --json "$PWD/cost-nx.cfg"
