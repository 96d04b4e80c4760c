# 50 NoXS noop guests created and destroyed by chaos leave nothing behind: no domain, Xen's free
# memory back where it was, no event channel or grant mapping still held by xendevd (the
# console backend), no record.
. "$XENLAB_TESTS/lib.sh"

XENDEVD_PID=
cleanup() {
	i=1
	while [ $i -le 50 ]; do chaos destroy "nx-$i" >/dev/null 2>&1; i=$((i + 1)); done
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log
free_mib() { xl info | awk '/^free_memory/ { print $3 }'; }

free0=$(free_mib)
ev0=$(dom0_evtchns xendevd)
gm0=$(gntdev_maps "$XENDEVD_PID")
cfg=$(noxs_cfg nx noop)
start=$(now)
chaos create -n 50 "$cfg" >/dev/null || fail "chaos create -n 50 (NoXS noop): expected success"
echo "50 NoXS guests created in $(elapsed "$start") s"
expect_eq "NoXS guests listed" 50 "$(chaos list | awk '$1 ~ /^nx-/' | wc -l)"
expect_eq "consoles served (xendevd's event channels)" $((ev0 + 50)) "$(dom0_evtchns xendevd)"
expect_eq "console rings mapped (xendevd's grant mappings)" $((gm0 + 50)) "$(gntdev_maps "$XENDEVD_PID")"
i=1
while [ $i -le 50 ]; do
	chaos destroy "nx-$i" || fail "chaos destroy nx-$i: expected success"
	i=$((i + 1))
done
expect_eq "guests left" 0 "$(guest_count)"
expect_eq "xendevd's event channels" "$ev0" "$(dom0_evtchns xendevd)"
expect_eq "xendevd's grant mappings" "$gm0" "$(gntdev_maps "$XENDEVD_PID")"
expect_eq "guest records" "" "$(ls /run/chaos/domains)"
expect_eq "NoXS backend records" "" "$(ls /run/chaos/noxs)"
# Xen frees a destroyed domain's memory once nothing maps it any more.
wait_until 10 sh -c "[ \"\$(xl info | awk '/^free_memory/ { print \$3 }')\" = $free0 ]" ||
	fail "Xen free memory: expected back at $free0 MiB, got $(free_mib) MiB"
