# NoXS guests cost xenstored nothing: with xenstored's trace on, chaos creates, lists, attaches
# to the console of, shuts down and destroys NoXS guests (hello and noop) and no connection
# opened meanwhile makes a single Xenstore request. For comparison, the same steps on the
# Xenstore plane, and xl's creation, are counted too (issue 12's numbers).
. "$XENLAB_TESTS/lib.sh"

XENDEVD_PID=
cleanup() {
	xs_trace_off
	for n in nx-hello nx-noop xs-noop; do chaos destroy "$n" >/dev/null 2>&1; done
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log

xs_trace_on "$PWD/xs-trace.log"
m=$(xs_trace_mark)
chaos create "$(noxs_cfg nx-hello hello)" >/dev/null || fail "chaos create nx-hello (NoXS): expected success"
wait_for_line "$(console_log nx-hello)" 'hello from chaos test guest' 60 ||
	fail "nx-hello: expected its greeting on the console log within 60 s, got: $(cat "$(console_log nx-hello)" 2>&1)"
wait_gone_chaos nx-hello 30 || fail "nx-hello: expected the reaper to destroy it after poweroff"
chaos create "$(noxs_cfg nx-noop noop)" >/dev/null || fail "chaos create nx-noop (NoXS): expected success"
chaos list >/dev/null || fail "chaos list: expected success"
# The console: nothing to read from noop, but the attach itself must not touch Xenstore.
timeout 2 chaos console nx-noop </dev/null >/dev/null 2>&1
sleep 1
out=$(chaos shutdown -w --timeout 60 nx-noop 2>&1) || fail "chaos shutdown -w nx-noop: expected success, got: $out"
wait_gone_chaos nx-noop 30 || fail "nx-noop: expected gone after its poweroff"
chaos create -p "$(noxs_cfg nx-noop noop)" >/dev/null || fail "chaos create -p nx-noop (NoXS): expected success"
chaos destroy nx-noop || fail "chaos destroy nx-noop: expected success"
noxs=$(xs_trace_count_since "$m" new)
echo "NoXS (create hello and noop, list, console, shutdown, create, destroy): $noxs Xenstore requests on new connections; by connection: $(xs_trace_by_conn_since "$m" | tr '\n' ';')"
echo "XS-REQUESTS chaos-noxs $noxs"
expect_eq "Xenstore requests made by chaos for NoXS guests" 0 "$noxs"

# chaos counts its own calls (chaos create --json: "costs"): hypercalls and ioctls by kind,
# Xenstore requests. They are the same from run to run, unlike times.
costs_of() { echo "$1" | sed -n 's/.*"costs":\({"hypercalls":{[^}]*},"xenstore_requests":[0-9]*}\).*/\1/p'; }
hypercalls_in() { echo "$1" | sed 's/.*"hypercalls":{\([^}]*\)}.*/\1/' | tr ',' '\n' | sed 's/.*://' | awk '{ s += $1 } END { print s + 0 }'; }
out=$(chaos create -p --json "$(noxs_cfg nx-noop noop)" 2>&1) || fail "chaos create -p --json nx-noop (NoXS): expected success, got: $out"
c=$(costs_of "$out")
[ -n "$c" ] || fail "chaos create --json: expected a costs object, got: $out"
chaos destroy nx-noop || fail "chaos destroy nx-noop: expected success"
echo "COSTS chaos-noxs $c"
expect_contains "chaos's own count of a NoXS creation's Xenstore requests" '"xenstore_requests":0}' "$c"
h=$(hypercalls_in "$c")
[ "$h" -gt 0 ] || fail "chaos create --json (NoXS): expected hypercalls counted, got $c"
echo "HYPERCALLS chaos-noxs $h"

# The same creation on the Xenstore plane, and xl's, for the numbers.
printf 'name = "xs-noop"\nkernel = "%s/noop"\nmemory = 2\n' "$XENLAB_GUEST" >xs-noop.cfg
for tool in chaos xl; do
	m=$(xs_trace_mark)
	if [ $tool = chaos ]; then
		out=$(chaos create -p --json xs-noop.cfg 2>&1) || fail "chaos create -p xs-noop: expected success, got: $out"
		c=$(costs_of "$out")
		echo "COSTS chaos-xenstore $c"
		echo "HYPERCALLS chaos-xenstore $(hypercalls_in "$c")"
	else
		xl create -p xs-noop.cfg >/dev/null 2>&1 || fail "xl create -p xs-noop: expected success"
	fi
	n=$(xs_trace_count_since "$m" new)
	$tool destroy xs-noop || fail "$tool destroy xs-noop: expected success"
	echo "XS-REQUESTS $tool-xenstore $n"
	[ "$n" -gt 0 ] || fail "$tool create on the Xenstore plane: expected Xenstore requests, got $n"
done
