# dom0 has the tools later tests need: strace runs (it counts the system calls of a command), and
# tun.ko is loaded so a TAP device can be made (busybox's tunctl: TUNSETIFF on /dev/net/tun).
. "$XENLAB_TESTS/lib.sh"

out=$(strace -c -o strace.out true 2>&1) || fail "strace -c true: expected success, got: $out"
expect_contains "strace -c summary" execve "$(cat strace.out)"
echo "strace -c true: $(awk '$NF == "total" { print $(NF - 1) " system calls" }' strace.out)"

[ -c /dev/net/tun ] || fail "/dev/net/tun: expected a character device (tun.ko loaded), got: $(ls -l /dev/net 2>&1)"
expect_ok "tunctl -t xltap0" tunctl -t xltap0
[ -e /sys/class/net/xltap0/tun_flags ] || fail "xltap0: expected a TUN/TAP interface, got: $(ip link show xltap0 2>&1)"
flags=$(cat /sys/class/net/xltap0/tun_flags)
# IFF_TAP = 0x0002
[ $((flags & 2)) -eq 2 ] || fail "xltap0 tun_flags: expected IFF_TAP (0x2) set, got $flags"
expect_ok "ip link set xltap0 up" ip link set xltap0 up
expect_ok "tunctl -d xltap0" tunctl -d xltap0
[ ! -e /sys/class/net/xltap0 ] || fail "xltap0: expected gone after tunctl -d"
echo "TAP device xltap0 made, brought up and removed"
