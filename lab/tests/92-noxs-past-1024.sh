# More NoXS guests than a process's usual 1024 open files: xendevd keeps files open per guest it
# serves (the console log) and raises its own limit at start, so 1100 paused noop guests are all
# served; destroying them gives back every file, event channel and grant mapping.
. "$XENLAB_TESTS/lib.sh"

count=1100
XENDEVD_PID=
names() {
	i=1
	while [ $i -le $count ]; do
		echo "px-$i"
		i=$((i + 1))
	done
}
cleanup() {
	# shellcheck disable=SC2046 # one word per name
	chaos destroy $(names) >/dev/null 2>&1
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log
# xendevd's open files but sockets: a long-lived client (the reaper started by chaos create)
# keeps its connection to xendevd, as it may.
# shellcheck disable=SC2010 # the names in /proc/PID/fd are numbers
fds() { ls -l "/proc/$XENDEVD_PID/fd" | grep ' -> ' | grep -vc 'socket:'; }
limit=$(awk '/^Max open files/ { print $4 }' "/proc/$XENDEVD_PID/limits")
echo "xendevd: open-files limit $limit ($(grep 'open files' xendevd.log | tail -n 1))"
[ "$limit" -gt $((count + 100)) ] || fail "xendevd: expected an open-files limit above $((count + 100)), got $limit"

fd0=$(fds) ev0=$(dom0_evtchns xendevd) gm0=$(gntdev_maps "$XENDEVD_PID")
start=$(now)
out=$(chaos create -p -n $count "$(noxs_cfg px noop)" 2>&1 >/dev/null) ||
	fail "chaos create -p -n $count (NoXS noop): expected success, got: $(echo "$out" | tail -n 3)"
echo "$count NoXS guests created in $(elapsed "$start") s"
expect_eq "NoXS guests listed" $count "$(chaos list | awk '$1 ~ /^px-/' | wc -l)"
expect_eq "consoles served (xendevd's event channels)" $((ev0 + count)) "$(dom0_evtchns xendevd)"
expect_eq "console rings mapped (xendevd's grant mappings)" $((gm0 + count)) "$(gntdev_maps "$XENDEVD_PID")"
echo "xendevd holds $(fds) files (was $fd0)"
[ "$(fds)" -gt 1024 ] || fail "xendevd: expected more than 1024 open files with $count guests, got $(fds)"

start=$(now)
# shellcheck disable=SC2046 # one word per name
chaos destroy $(names) || fail "chaos destroy of the $count guests: expected success"
echo "$count destroyed in $(elapsed "$start") s"
expect_eq "guests left" 0 "$(guest_count)"
files_back() { [ "$(fds)" = "$fd0" ]; }
wait_until 10 files_back || fail "xendevd: expected its open files (sockets aside) back at $fd0, got $(fds)"
expect_eq "xendevd's event channels" "$ev0" "$(dom0_evtchns xendevd)"
expect_eq "xendevd's grant mappings" "$gm0" "$(gntdev_maps "$XENDEVD_PID")"
expect_eq "NoXS backend records" "" "$(ls /run/chaos/noxs)"
