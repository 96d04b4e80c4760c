# shellcheck shell=bash
# xenlab, the machine: its options, one boot at a time per host (a lock), QEMU's command line,
# booting it with a watchdog, reading its serial console, and stopping whatever is left.

# is_uint VALUE: true if VALUE is a decimal number.
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Reads and checks the machine's options (see the table in lab/README.md).
read_options() {
	MEM=${XENLAB_MEM:-6144}
	SMP=${XENLAB_SMP:-2}
	DOM0_MEM=${XENLAB_DOM0_MEM:-1024}
	DOM0_XENSTORED=${XENLAB_XENSTORED:-1}
	DOM0_XS_TRACE=${XENLAB_XS_TRACE:-0}
	XEN_FLAVOUR=${XENLAB_XEN:-stock}
	LAB_LOCK=${XENLAB_LOCK:-/tmp/chaos-lab.lock}
	local v
	for v in MEM SMP DOM0_MEM; do
		is_uint "${!v}" || die "XENLAB_$v=${!v}: expected a number"
	done
	[[ $DOM0_XENSTORED =~ ^(0|1|oxenstored|patched)$ ]] ||
		die "XENLAB_XENSTORED=$DOM0_XENSTORED: expected 0, 1, oxenstored or patched"
	[[ $DOM0_XS_TRACE =~ ^[01]$ ]] || die "XENLAB_XS_TRACE=$DOM0_XS_TRACE: expected 0 or 1"
	[[ $XEN_FLAVOUR =~ ^(stock|noxs)$ ]] || die "XENLAB_XEN=$XEN_FLAVOUR: expected stock or noxs"
	[ "$DOM0_XS_TRACE" = 0 ] || [[ $DOM0_XENSTORED =~ ^(1|patched)$ ]] ||
		die "XENLAB_XS_TRACE=1 needs the C xenstored (XENLAB_XENSTORED=1 or patched)"
	[ "$DOM0_MEM" -ge 256 ] || die "XENLAB_DOM0_MEM=$DOM0_MEM: dom0 needs at least 256 MiB"
	[ $((DOM0_MEM + 256)) -le "$MEM" ] ||
		die "XENLAB_DOM0_MEM=$DOM0_MEM does not fit in XENLAB_MEM=$MEM (Xen and guests need the rest; raise XENLAB_MEM)"
	# smap=0: dom0 crashes at once under TCG with -cpu max otherwise. bootscrub=0: do not make idle
	# emulated CPUs scrub all of RAM in the background (host CPU time, host memory).
	XEN_CMDLINE="dom0_mem=${DOM0_MEM}M,max:${DOM0_MEM}M console=com1 com1=115200,8n1 smap=0 bootscrub=0"
	# rodata=off skips the W+X page-table check (~1.7 s under TCG); quiet keeps the console for the script.
	DOM0_CMDLINE="console=hvc0 quiet loglevel=3 rodata=off"
	# -nrip-save: PVH guests (tsc_mode="native") need it under TCG's nested SVM.
	# -fsgsbase: with it, processes in dom0 and in Linux guests lose their FS base (their TLS
	# pointer) now and then and crash on a TLS load (busybox at the same instruction in both);
	# Debian's 6.1.0-57 kernel did so in 2 of 8 disk-guest runs, none in 6 without the feature.
	QEMU_CPU="max,-nrip-save,-fsgsbase"
}

# What dom0's /init reads from /etc/xenlab/options (sh syntax).
dom0_options() {
	echo "XENLAB_XENSTORED=$DOM0_XENSTORED"
	echo "XENLAB_XS_TRACE=$DOM0_XS_TRACE"
	echo "XENLAB_XEN=$XEN_FLAVOUR"
}

# ------------------------------------------------------------------------------------ the lock
# One QEMU per machine: a boot holds an exclusive flock on $LAB_LOCK, the same file people lock by
# hand (`flock /tmp/chaos-lab.lock lab/xenlab ...`). A caller that holds it already passes its
# open file to us (flock(1) does): locking that same open file again succeeds at once, where a
# second open of the file would wait for ourselves forever. XENLAB_LOCK_HELD=1 says the caller
# holds it without passing it (flock -o). QEMU inherits the lock, so it is held while QEMU runs.
LOCK_FD=""
lab_lock() {
	[ "${XENLAB_LOCK_HELD:-0}" = 1 ] && return
	[ -z "$LOCK_FD" ] || return 0
	local want fd
	want=$(stat -L -c '%d:%i' "$LAB_LOCK" 2>/dev/null || true)
	if [ -n "$want" ]; then
		for fd in "/proc/$$/fd"/*; do
			fd=${fd##*/}
			[ "$fd" -gt 2 ] || continue
			[ "$(stat -L -c '%d:%i' "/proc/$$/fd/$fd" 2>/dev/null)" = "$want" ] || continue
			if ! flock -n "$fd"; then
				say "waiting for another lab run (lock $LAB_LOCK)"
				flock "$fd"
			fi
			LOCK_FD=inherited
			return
		done
	fi
	exec {LOCK_FD}>>"$LAB_LOCK" || die "cannot open the lab lock $LAB_LOCK"
	if ! flock -n "$LOCK_FD"; then
		say "waiting for another lab run (lock $LAB_LOCK)"
		flock "$LOCK_FD"
	fi
}

# Releases the lock unless a caller holds it for us.
lab_unlock() {
	case $LOCK_FD in
	"" | inherited) ;;
	*)
		exec {LOCK_FD}>&-
		LOCK_FD=""
		;;
	esac
}

# ------------------------------------------------------------------------------------------- boot
# Kills what a previous xenlab left behind (e.g. after SIGKILL): qemu processes whose pid file is in
# $WORK and whose xenlab is gone.
reap_stale() {
	local pf owner pid
	for pf in "$WORK"/qemu-*.pid; do
		owner=${pf##*/qemu-}
		owner=${owner%.pid}
		kill -0 "$owner" 2>/dev/null && continue
		pid=$(cat "$pf" 2>/dev/null || true)
		if [ -n "$pid" ] && grep -qF "$pf" "/proc/$pid/cmdline" 2>/dev/null; then
			say "killing stale qemu $pid"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$pf"
	done
	for pf in "$WORK"/run.* "$WORK"/base.* "$WORK"/xen-build.*; do
		kill -0 "${pf##*.}" 2>/dev/null || rm -rf "$pf"
	done
}

# QEMU command line into QEMU; $1 = the serial console's backend (stdio, or mon:stdio interactively)
qemu_args() {
	QEMU=(qemu-system-x86_64 -nodefaults -no-user-config -machine q35 -accel tcg -cpu "$QEMU_CPU"
		-m "$MEM" -smp "$SMP" -display none -serial "$1" -no-reboot -pidfile "$WORK/qemu-$$.pid"
		-kernel "$XEN_IMAGE" -append "$XEN_CMDLINE"
		-initrd "$BASE/dom0-vmlinux $DOM0_CMDLINE,$RUN/initrd.img")
	# XENLAB_QEMU_ARGS: more QEMU arguments, split at spaces (e.g. -mem-prealloc)
	local extra=()
	read -r -a extra <<<"${XENLAB_QEMU_ARGS:-}"
	QEMU+=("${extra[@]}")
}

QEMU_PID="" WATCHDOG_PID="" RUN=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [ -n "$WATCHDOG_PID" ]; then kill -TERM -- "-$WATCHDOG_PID" 2>/dev/null || true; fi
	[ -n "$QEMU_PID" ] || QEMU_PID=$(cat "$WORK/qemu-$$.pid" 2>/dev/null || true)
	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
		say "stopping qemu (pid $QEMU_PID)"
		kill -TERM -- "-$QEMU_PID" 2>/dev/null || kill -TERM "$QEMU_PID" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL -- "-$QEMU_PID" 2>/dev/null || kill -KILL "$QEMU_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK/qemu-$$.pid" "$WORK/base.$$"
	[ -z "$RUN" ] || rm -rf "$RUN"
	exit "$rc"
}

new_run_dir() {
	RUN=$WORK/run.$$
	rm -rf "$RUN"
	mkdir -p "$RUN" "$WORK/logs"
}

# Boots with $1 as /lab/cmd and streams the serial console (see stream_console). Sets SCRIPT_RC
# (empty if the script never finished) and BOOT_OUTCOME (ok, timeout, crashed, hung). Under TCG, dom0's
# Linux now and then stops right after Xen hands over ("about to get started...", both CPUs busy
# for good): a boot whose dom0 has not reached /init after BOOT_STALL seconds is stopped and
# booted again, once.
# shellcheck disable=SC2034 # BOOT_OUTCOME is read by the commands (commands.sh)
boot_and_run() {
	local cmd=$1 timeout=$2 name=$3 attempt
	build_initrd "$cmd"
	qemu_args stdio
	for attempt in 1 2; do
		boot_once "$timeout" "$name"
		[ "$BOOT_OUTCOME" = stalled ] || return 0
		if [ "$attempt" = 1 ]; then
			say "boot: dom0 had not started after ${BOOT_STALL}s (stalled under TCG); booting again"
		fi
	done
	say "boot: dom0 stalled again; giving up"
	BOOT_OUTCOME=crashed
}

BOOT_STALL=${XENLAB_BOOT_STALL:-120}

# One boot of boot_and_run: BOOT_OUTCOME is also "stalled" when dom0 never reached /init.
boot_once() {
	local timeout=$1 name=$2
	LOG=$WORK/logs/$name-$(date +%Y%m%d-%H%M%S).log
	ln -sfn "${LOG##*/}" "$WORK/logs/last.log"
	rm -f "$RUN/console" "$RUN/timed-out" "$RUN/stalled" "$RUN/dom0-up" "$RUN/hung"
	mkfifo "$RUN/console"
	lab_lock
	say "boot: qemu (TCG, ${MEM} MiB, ${SMP} CPUs, dom0 ${DOM0_MEM} MiB, $XEN_FLAVOUR Xen${XENLAB_QEMU_ARGS:+, $XENLAB_QEMU_ARGS}), log $LOG"
	T_QEMU=${EPOCHREALTIME/./}
	# own session and process group: a Ctrl-C reaches xenlab, which then stops the whole group
	setsid "${QEMU[@]}" </dev/null >"$RUN/console" 2>&1 &
	QEMU_PID=$!
	# the watchdog outlives xenlab if xenlab is SIGKILLed, so a hung machine is always stopped;
	# it stops a boot whose dom0 has not said it runs (stream_console's dom0-up) in time, too
	# shellcheck disable=SC2016 # the script's $1..$5 are its arguments, expanded by that bash
	setsid bash -c 'limit=$1 stall=$2 pid=$3 run=$4
		up() { grep -q qemu "/proc/$pid/cmdline" 2>/dev/null; }
		stop() { touch "$run/$1"; kill -TERM -- "-$pid"; sleep 3; kill -KILL -- "-$pid"; exit; }
		if [ "$stall" -lt "$limit" ]; then
			sleep "$stall"; up || exit; [ -e "$run/dom0-up" ] || stop stalled
			sleep $((limit - stall))
		else sleep "$limit"; fi
		up || exit; stop timed-out' watchdog "$timeout" "$BOOT_STALL" "$QEMU_PID" "$RUN" \
		</dev/null >/dev/null 2>&1 &
	WATCHDOG_PID=$!
	stream_console <"$RUN/console"
	local qrc=0
	wait "$QEMU_PID" || qrc=$?
	QEMU_PID=""
	lab_unlock
	kill -TERM -- "-$WATCHDOG_PID" 2>/dev/null || true
	WATCHDOG_PID=""
	local t
	secs_since "$T_QEMU" t
	if [ -e "$RUN/stalled" ]; then
		BOOT_OUTCOME=stalled
	elif [ -e "$RUN/hung" ]; then
		BOOT_OUTCOME=hung
		say "machine stopped: $HUNG; last console lines:"
		tail -n 15 "$LOG" >&2
	elif [ -e "$RUN/timed-out" ]; then
		BOOT_OUTCOME=timeout
		say "timeout: machine stopped after ${timeout}s (XENLAB_TIMEOUT)"
	elif [ -z "$SCRIPT_RC" ]; then
		BOOT_OUTCOME=crashed
		say "machine stopped (qemu rc=$qrc) before the script finished; last console lines:"
		tail -n 25 "$LOG" >&2
	else
		BOOT_OUTCOME=ok
		say "done: machine off after ${t}s"
	fi
}

# Reads the serial console: writes every line, time-stamped, to $LOG; shows boot progress on stderr
# and the script's output on stdout; records the script's exit code and test results. Files dom0
# sends (base64 between `@@XENLAB-FILE NAME SIZE SHA256` and `@@XENLAB-FILE-END`) go to
# $RUN/files/NAME.b64, not to the log; FILES_RECEIVED lists them as "NAME SHA256".
#
# It also notices a machine that hangs while it runs tests (see check_hung) and stops it.
stream_console() {
	local line t state=boot name rc uptime file="" file_sum="" file_lines=0 chunk partial="" read_rc
	SCRIPT_RC="" TESTS_DONE=() TESTS_FAILED=() CURRENT_TEST="" FILES_RECEIVED=() DOM0_UNHEALTHY=""
	LAST_BEAT="" TEST_SINCE="" HUNG=""
	exec 4>"$LOG"
	while :; do
		# a timeout (rc > 128) keeps what came of a line so far: the next read goes on with it
		read_rc=0
		IFS= read -r -t 10 chunk || read_rc=$?
		check_hung # also between lines: Xen can go on printing while dom0 hangs
		if [ "$read_rc" -gt 128 ]; then
			partial+=$chunk
			continue
		fi
		line=$partial$chunk partial=""
		# end of the console: a last line without its newline is still read
		[ "$read_rc" -eq 0 ] || [ -n "$line" ] || break
		line=${line//$'\r'/}
		if [ -n "$file" ]; then
			# run-tests' heartbeat is one write of its own, so it can land inside a line of
			# base64: the two halves, joined, are the data (base64 -d ignores line breaks)
			if [[ $line == *@@XENLAB-ALIVE* ]]; then
				LAST_BEAT=${EPOCHREALTIME/./}
				line=${line//@@XENLAB-ALIVE/}
				[ -n "$line" ] || continue
			fi
			if [[ $line == *@@XENLAB-FILE-END* ]]; then
				exec 5>&-
				FILES_RECEIVED+=("$file $file_sum")
				printf '[file %s: %d lines of base64, not logged]\n' "$file" "$file_lines" >&4
				file=""
			elif [[ $line =~ ^[A-Za-z0-9+/=]+$ ]]; then
				printf '%s\n' "$line" >&5
				file_lines=$((file_lines + 1))
			else
				printf '%s\n' "$line" >&4 # a console message in between
			fi
			continue
		fi
		secs_since "$T_QEMU" t
		printf '[%7s] %s\n' "$t" "$line" >&4
		case $line in
		*@@XENLAB-PHASE\ *)
			read -r name uptime _ <<<"${line##*@@XENLAB-PHASE }"
			[ -e "$RUN/dom0-up" ] || : >"$RUN/dom0-up"
			say "dom0: $name (uptime ${uptime:-?}s)"
			continue
			;;
		*@@XENLAB-WARN\ *) say "dom0 warning: ${line##*@@XENLAB-WARN }" ;;
		*@@XENLAB-BEGIN*)
			state=script
			continue
			;;
		*@@XENLAB-END\ rc=*)
			SCRIPT_RC=${line##*rc=}
			SCRIPT_RC=${SCRIPT_RC%% *}
			state=after
			continue
			;;
		*@@XENLAB-ALIVE*)
			LAST_BEAT=${EPOCHREALTIME/./}
			continue
			;;
		*@@XENLAB-TEST-BEGIN\ *)
			CURRENT_TEST=${line##*TEST-BEGIN }
			TEST_SINCE=${EPOCHREALTIME/./}
			say "test: $CURRENT_TEST"
			continue
			;;
		*@@XENLAB-TEST-END\ *)
			read -r name rc _ <<<"${line##*TEST-END }"
			TESTS_DONE+=("$name")
			[ "$rc" = rc=0 ] || TESTS_FAILED+=("$name")
			CURRENT_TEST=""
			continue
			;;
		*@@XENLAB-DOM0-UNHEALTHY\ *)
			DOM0_UNHEALTHY=${line##*@@XENLAB-DOM0-UNHEALTHY }
			say "dom0 damaged during $DOM0_UNHEALTHY"
			continue
			;;
		*@@XENLAB-RESULT*) continue ;;
		*@@XENLAB-FILE\ *)
			read -r name _ file_sum _ <<<"${line##*@@XENLAB-FILE }"
			if [[ $name =~ ^[A-Za-z0-9._-]+$ && $file_sum =~ ^[0-9a-f]{64}$ ]]; then
				mkdir -p "$RUN/files"
				file=$name file_lines=0
				exec 5>"$RUN/files/$name.b64"
				say "dom0: sending $name"
			fi
			continue
			;;
		"(XEN) Xen version"*) say "xen: ${line#(XEN) }" ;;
		*"*** LOADING DOMAIN 0 ***"*) say "xen: building dom0" ;;
		*"Scrubbing"* | *"Std. Loglevel"*) ;;
		esac
		if [ "$state" = script ]; then
			printf '[%7s] %s\n' "$t" "$line"
			case $line in FAIL* | RETRY*) FAIL_LINES+=("${CURRENT_TEST:-?}: ${line:0:300}") ;; esac
		elif [ "${XENLAB_VERBOSE:-0}" = 1 ]; then
			printf '[%7s] %s\n' "$t" "$line" >&2
		fi
	done
	exec 4>&-
}

# For stream_console, after every line and every 10 s of a quiet console. dom0's run-tests says
# @@XENLAB-ALIVE every 20 s from a process of its own; when that stops for XENLAB_SILENCE seconds
# (default 180) the machine is hung: its kernel, or its console. Where a test has run longer
# than its tries can (XENLAB_RETRIES + 1 runs of XENLAB_TEST_TIMEOUT, with room for cleanup),
# its kill did not work (a process stuck in the kernel). Either way the machine is stopped and
# HUNG says why; the test command runs the tests left in a fresh boot (commands.sh). Without
# this, one hung dom0 kept a CI run waiting until the boot's own limit, far past CI's.
check_hung() {
	[ -n "$LAST_BEAT" ] && [ -n "$QEMU_PID" ] || return 0
	if [ -n "$HUNG" ]; then # stopped 10 s ago and still there
		kill -KILL -- "-$QEMU_PID" 2>/dev/null || true
		return 0
	fi
	local now=${EPOCHREALTIME/./} silence=${XENLAB_SILENCE:-180} test_limit
	test_limit=$(((${XENLAB_RETRIES:-1} + 1) * (${XENLAB_TEST_TIMEOUT:-600} + 60) + 60))
	if [ $((now - LAST_BEAT)) -gt $((silence * 1000000)) ]; then
		HUNG="no sign of life from dom0 for ${silence}s (XENLAB_SILENCE)"
	elif [ -n "$CURRENT_TEST" ] && [ $((now - TEST_SINCE)) -gt $((test_limit * 1000000)) ]; then
		HUNG="test $CURRENT_TEST still running after ${test_limit}s, longer than its tries can take"
	else
		return 0
	fi
	say "hung: $HUNG; stopping the machine"
	: >"$RUN/hung"
	kill -TERM -- "-$QEMU_PID" 2>/dev/null || true
}
