# hello (guests/, a no_std Rust PV unikernel) prints its domid and command line on its PV console
# and powers off; the word "crash" or "reboot" on its command line makes it shut down with that
# reason instead. Runs in the least memory it boots in (1 MiB).
. "$XENLAB_TESTS/lib.sh"

mem=${HELLO_MEMORY:-1}

# hello_cfg NAME EXTRA ON_CRASH: writes ./NAME.cfg and prints its path.
hello_cfg() {
	cat >"$PWD/$1.cfg" <<-EOF
	name = "$1"
	type = "pv"
	kernel = "$GUEST/hello"
	extra = "$2"
	memory = $mem
	vcpus = 1
	on_poweroff = "destroy"
	on_reboot = "destroy"
	on_crash = "$3"
	EOF
	echo "$PWD/$1.cfg"
}

# run NAME EXTRA ON_CRASH REASON: creates hello, checks its console line and that xl saw
# shutdown reason code REASON (0 poweroff, 1 reboot, 3 crash). Prints the guest's domid.
run() {
	xl_log=/var/log/xen/xl-$1.log
	rm -f "$xl_log"
	start=$(now)
	out=$(xl create -q "$(hello_cfg "$1" "$2" "$3")" 2>&1) || fail "xl create $1: expected success, got: $out"
	echo "$1: xl create ${mem} MiB: $(elapsed "$start")s" >&2
	log=$(console_log "$1")
	wait_for_line "$log" 'hello from chaos test guest' 60 ||
		fail "$1 console: expected the hello line within 60s, got: $(tail -n 3 "$log" 2>&1)"
	line=$(grep 'hello from chaos test guest' "$log" | tail -n 1 | tr -d '\r')
	echo "$1: console: $line" >&2
	expect_contains "$1 console line" "cmdline=\"$2\"" "$line"
	domid=$(echo "$line" | sed -n 's/.*domid=\([0-9][0-9]*\) .*/\1/p')
	[ -n "$domid" ] || fail "$1 console line: expected domid=<number>, got: $line"
	wait_for_line "$xl_log" "Domain $domid has shut down, reason code $4 " 60 ||
		fail "$1: expected xl to see domain $domid shut down with reason code $4, xl log: $(grep 'shut down' "$xl_log" 2>&1)"
	echo "$1: shut down with reason code $4: $(elapsed "$start")s" >&2
	echo "$domid"
}

# poweroff: the domain is destroyed by on_poweroff.
run hello "lab test words" destroy 0 >/dev/null
wait_gone hello 30 || fail "hello: expected gone after poweroff, still there: $(xl list)"

# crash, preserved: the domain stays, marked crashed (state flag c), until destroyed.
run hellocrash "crash now" preserve 3 >/dev/null
state=$(xl list hellocrash 2>/dev/null | awk 'NR == 2 { print $5 }')
expect_contains "hellocrash state" c "$state"
expect_ok "xl destroy hellocrash" xl destroy hellocrash
wait_gone hellocrash 30 || fail "hellocrash: expected gone after xl destroy: $(xl list)"

# reboot: on_reboot = destroy, so no restart loop.
run helloreboot "please reboot" destroy 1 >/dev/null
wait_gone helloreboot 30 || fail "helloreboot: expected gone after reboot request, still there: $(xl list)"
echo "hello: poweroff, crash and reboot as asked"
