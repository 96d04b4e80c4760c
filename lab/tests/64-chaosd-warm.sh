# Warm shells on real Xen: chaosd keeps shells of the hello unikernel with its image already
# built in them (`--flavor config=FILE,count=N,warm=1`), on the Xenstore plane and on NoXS.
# Guests created from them print their own command line (start_info is per guest), several in a
# row (the pool refills warm shells); when the kernel file changes, the warm shells are not used
# (the guest comes from the direct path and runs the new file); stopping chaosd leaves nothing.
. "$XENLAB_TESTS/lib.sh"

XENDEVD_PID=
DAEMON=
cleanup() {
	[ -n "$DAEMON" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
	stop_xendevd
}
trap cleanup EXIT
start_xendevd xendevd.log
cp "$GUEST/hello" hello.elf
for plane in xenstore noxs; do
	printf 'name = "w-%s"\nkernel = "%s/hello.elf"\nmemory = 2\nchaos_control_plane = "%s"\non_poweroff = "destroy"\n' \
		"$plane" "$PWD" "$plane" >"w-$plane.cfg"
done
chaosd --flavor "config=$PWD/w-xenstore.cfg,count=2,warm=1" --flavor "config=$PWD/w-noxs.cfg,count=2,warm=1" \
	--reserve-mib 64 >chaosd.log 2>&1 &
DAEMON=$!
full() { [ "$(chaos pool status --json 2>/dev/null | grep -o '"ready":2,"target":2' | wc -l)" -ge 2 ]; }
wait_until 120 full || fail "chaosd: expected 2 warm shells per flavor, got: $(chaos pool status 2>&1 | tail -n 4); log: $(tail -n 5 chaosd.log)"
status=$(chaos pool status 2>&1)
expect_contains "chaos pool status" "warm with $PWD/hello.elf" "$status"

# create PLANE N WANT_PATH: a hello from chaosd with extra "warm PLANE N"; its greeting shows it.
create() {
	_out=$(chaos create "w-$1.cfg" "name=\"w-$1-$2\"" "extra=\"warm $1 $2\"" 2>&1) ||
		fail "chaos create w-$1-$2: expected success, got: $_out; chaosd: $(tail -n 3 chaosd.log)"
	expect_contains "w-$1-$2" "via the $3 path (chaosd)" "$_out"
	_log=$(console_log "w-$1-$2")
	wait_for_line "$_log" 'hello from chaos test guest' 60 ||
		fail "w-$1-$2 console: expected its greeting, got: $(tail -n 3 "$_log" 2>&1 | tr -d '\r')"
	expect_contains "w-$1-$2 greeting" "cmdline=\"warm $1 $2\"" "$(grep 'hello from chaos' "$_log" | tr -d '\r')"
	wait_gone_chaos "w-$1-$2" 30 || fail "w-$1-$2: expected gone after its poweroff"
	echo "w-$1-$2: $(echo "$_out" | head -n 1)"
}
for n in 1 2 3; do
	for plane in xenstore noxs; do create "$plane" "$n" pool; done
	wait_until 60 full || fail "chaosd: expected the warm shells refilled"
done

# The kernel changes under the warm shells: they hold the old image, so chaosd creates the guest
# without them, from the new file.
cat "$GUEST/hello" >hello.elf.new
printf 'changed' >>hello.elf.new
mv hello.elf.new hello.elf
create xenstore 4 direct
create noxs 4 direct
grep -q 'holds another image' chaosd.log || fail "chaosd log: expected the stale warm shells named, got: $(tail -n 5 chaosd.log)"

kill -TERM "$DAEMON"
wait "$DAEMON"
DAEMON=
expect_eq "domains after chaosd stopped" 0 "$(guest_count)"
