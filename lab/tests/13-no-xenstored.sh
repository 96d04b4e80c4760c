# With XENLAB_XENSTORED=0, dom0 runs no xenstored (nor xen-init-dom0, xenconsoled) and the
# hypervisor is still there: privcmd hypercalls work (chaos list, xl dmesg). Skipped otherwise.
. "$XENLAB_TESTS/lib.sh"

if [ "$XENLAB_XENSTORED" != 0 ]; then
	echo "skipped: needs XENLAB_XENSTORED=0"
	exit 0
fi
for daemon in xenstored xenconsoled; do
	pid=$(pidof "$daemon") && fail "$daemon: expected not running, it is (pid $pid)"
done
[ ! -S /run/xenstored/socket ] || fail "/run/xenstored/socket: expected absent, it exists"
[ -c /dev/xen/privcmd ] || fail "/dev/xen/privcmd: expected a character device, got: $(ls -l /dev/xen 2>&1)"
list=$(chaos list 2>&1) || fail "chaos list (privcmd hypercalls only): expected success, got: $list"
dom0=$(echo "$list" | awk '$1 == "Domain-0" { print $2 }')
expect_eq "Domain-0 id in chaos list" 0 "$dom0"
dmesg=$(xl dmesg 2>&1) || fail "xl dmesg: expected success, got: $dmesg"
expect_contains "xl dmesg" "(XEN)" "$dmesg"
echo "no xenstored; hypercalls work: Domain-0 listed by chaos, xl dmesg has $(echo "$dmesg" | wc -l) lines"
