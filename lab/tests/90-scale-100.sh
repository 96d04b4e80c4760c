# The scale harness (benches/src/bin/scale) at 100 guests per chaos path (chaos create with
# Xenstore, chaosd's shells, NoXS with xendevd, the library in-process) and xl to 10, timed at
# 50 and 100 chaos guests. Passes when every creation and destroy succeeds, creation is flat
# loosely (for each chaos path, the median of its last 20 creations against its first 20's,
# never an absolute time: within 2x for NoXS, 3x on the Xenstore plane, where xenstored's
# cost per request grows with the guests: docs/COSTS.md; the library path, with no process
# start to dilute it, measured 1.2-2.3x in the lab) and a churn of 20 create/destroy cycles
# gives every counted resource back (Xen memory, Xenstore nodes, dom0 event channels, fds,
# mappings, /run/chaos). With the patched xenstored (XENLAB_XENSTORED=patched, which ./test.sh
# boots), whose watch events no longer cost every running guest, the Xenstore plane is held to
# NoXS's 2x.
. "$XENLAB_TESTS/lib.sh"

command -v scale >/dev/null || fail "scale: expected in PATH (xenlab builds it for *-scale-* tests)"
xs_ratio=3
[ "$XENLAB_XENSTORED" != patched ] || xs_ratio=2
rc=0
scale -n "${SCALE_GUESTS:-100}" --xl-max 10 --xl-checkpoint-every 50 --xl-checkpoint-runs 2 \
	--window 20 --max-ratio 2 --max-ratio-xenstore "$xs_ratio" --churn 20 --out "$PWD/results" || rc=$?
# the harness's guests' (empty) console logs: hundreds of them, nothing to show on failure
rm -f /var/log/xen/console/guest-scale-*.log /var/log/xen/console/guest-churn-*.log
[ $rc -eq 0 ] || fail "scale harness: expected flat creation and a clean churn (summary above)"
