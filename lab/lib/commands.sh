# shellcheck shell=bash
# xenlab, the commands: run, test, demo, shell (setup and clean are one-liners in xenlab).

cmd_run() {
	[ $# -eq 1 ] || die "usage: xenlab run SCRIPT"
	[ -f "$1" ] || die "no such script: $1"
	local script
	script=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
	setup
	reap_stale
	new_run_dir
	boot_and_run "$script" "${XENLAB_TIMEOUT:-900}" run
	case $BOOT_OUTCOME in
	ok) exit "$SCRIPT_RC" ;;
	timeout) exit 124 ;;
	*) exit 125 ;;
	esac
}

# Names of the lab tests (lexical order) that contain one of the filters, or all.
select_tests() {
	local f name filter
	for f in "$LAB"/tests/*.sh; do
		name=$(basename "$f" .sh)
		[ "$name" = lib ] && continue
		if [ $# -eq 0 ]; then
			# The benchmarks are long and only print numbers: by name only (`test bench`).
			case $name in *-bench-*) continue ;; esac
			echo "$name"
			continue
		fi
		for filter in "$@"; do
			case $name in *"$filter"*)
				echo "$name"
				break
				;;
			esac
		done
	done
}

# `test [FILTER...]`: the selected tests in one boot. Where dom0 gets damaged (run-tests'
# check_dom0: a crashed process, a dead daemon; TCG's memory corruption; or the machine hangs
# or stops during a test: boot.sh's check_hung), the tests left, the
# one it happened in first, run in a fresh boot, up to XENLAB_FRESH_BOOTS (default 3) more
# boots. So do the tests that failed earlier in that boot, once: the corruption can come
# before the crash that shows it. A test that fails on a sound dom0 fails; so does one that
# damages dom0 in XENLAB_DAMAGE_TRIES (default 3) boots. The end of the output repeats every
# FAIL line, so a log's tail says why.
cmd_test() {
	local tests=() left=() done_all=() failed_all=() boots=0 passed failed name
	local -A damaged=() suspect=()
	FAIL_LINES=()
	mapfile -t tests < <(select_tests "$@")
	[ ${#tests[@]} -gt 0 ] || die "no lab test matches: $*"
	# shellcheck disable=SC2034 # read by build_project (build.sh)
	case " ${tests[*]}" in *-scale-*) LAB_WANT_SCALE=1 ;; esac
	setup
	reap_stale
	left=("${tests[@]}")
	while :; do
		new_run_dir
		{
			echo '#!/bin/sh'
			echo "export XENLAB_TEST_TIMEOUT=${XENLAB_TEST_TIMEOUT:-600}"
			echo "export XENLAB_RETRIES=${XENLAB_RETRIES:-1}"
			echo "exec run-tests ${left[*]}"
		} >"$RUN/cmd"
		say "tests: ${left[*]}"
		boot_and_run "$RUN/cmd" "${XENLAB_TIMEOUT:-$((300 + 300 * ${#left[@]}))}" test
		boots=$((boots + 1))
		# a machine that hung or died in a test counts as dom0 damaged in that test
		if [ -z "$DOM0_UNHEALTHY" ] && [ -n "$CURRENT_TEST" ]; then
			case $BOOT_OUTCOME in
			hung) DOM0_UNHEALTHY="$CURRENT_TEST: $HUNG" ;;
			crashed) DOM0_UNHEALTHY="$CURRENT_TEST: the machine stopped" ;;
			esac
		fi
		done_all+=("${TESTS_DONE[@]}")
		failed_all+=("${TESTS_FAILED[@]}")
		if [ -z "$DOM0_UNHEALTHY" ] || [ "$boots" -gt "${XENLAB_FRESH_BOOTS:-3}" ]; then break; fi
		rerun_suspects
		name=${DOM0_UNHEALTHY%%:*}
		damaged[$name]=$((${damaged[$name]:-0} + 1))
		if [ "${damaged[$name]}" -ge "${XENLAB_DAMAGE_TRIES:-3}" ]; then
			say "$name damaged dom0 in ${damaged[$name]} boots: it fails"
			done_all+=("$name")
			failed_all+=("$name")
		fi
		local rest=()
		for name in "${left[@]}"; do
			case " ${done_all[*]} " in *" $name "*) ;; *) rest+=("$name") ;; esac
		done
		left=("${rest[@]}")
		[ ${#left[@]} -gt 0 ] || break
		say "dom0 was damaged (${DOM0_UNHEALTHY}); a fresh boot for the ${#left[@]} test(s) left"
	done
	# a test that never finished (machine died or timed out) failed, so did those never started
	passed=$((${#done_all[@]} - ${#failed_all[@]}))
	failed=$((${#tests[@]} - passed))
	[ -z "$CURRENT_TEST" ] || say "test $CURRENT_TEST did not finish ($BOOT_OUTCOME)"
	[ -z "$DOM0_UNHEALTHY" ] || say "dom0 was damaged in the last boot: $DOM0_UNHEALTHY"
	if [ ${#FAIL_LINES[@]} -gt 0 ]; then
		say "FAIL lines (test: line), in the order they came:"
		printf '  %s\n' "${FAIL_LINES[@]:0:40}"
	fi
	[ ${#failed_all[@]} -eq 0 ] || say "failed: ${failed_all[*]}"
	[ "$boots" -eq 1 ] || say "$boots boots"
	echo "$passed passed, $failed failed"
	if [ "$failed" -ne 0 ]; then exit 1; fi
	exit 0
}

# For cmd_test, after a boot that damaged dom0: the tests that failed in it are taken off
# done_all and failed_all, to run again in the fresh boot, unless they already had that rerun.
rerun_suspects() {
	local t keep_done=() keep_failed=() again=()
	for t in "${TESTS_FAILED[@]}"; do
		[ -z "${suspect[$t]:-}" ] || continue
		suspect[$t]=1
		again+=("$t")
	done
	[ ${#again[@]} -gt 0 ] || return 0
	for t in "${done_all[@]}"; do
		case " ${again[*]} " in *" $t "*) ;; *) keep_done+=("$t") ;; esac
	done
	for t in "${failed_all[@]}"; do
		case " ${again[*]} " in *" $t "*) ;; *) keep_failed+=("$t") ;; esac
	done
	done_all=("${keep_done[@]}")
	failed_all=("${keep_failed[@]}")
	say "failed in the boot that damaged dom0, so run again in the fresh boot: ${again[*]}"
}

# `bench scale [N]`: the scale harness (benches/src/bin/scale) with N guests per tool (default
# 1000) and a churn check of N cycles; XENLAB_SCALE_ARGS adds harness flags. The machine gets
# room for them unless told otherwise. Results land in lab/work/results/<date>/.
cmd_bench() {
	[ "${1:-}" = scale ] || die "usage: xenlab bench scale [N]   (the only bench so far)"
	local n=${2:-1000}
	if ! is_uint "$n" || [ "$n" -lt 1 ]; then die "bench scale: N=$n: expected a number of guests"; fi
	# ~2 MiB and Xen's own pages per noop guest, plus dom0: 8 GiB for 1000 (the host has 24).
	: "${XENLAB_DOM0_MEM:=2048}"
	: "${XENLAB_MEM:=$((XENLAB_DOM0_MEM + 2048 + 5 * n))}"
	# The host allocates all of the machine's RAM at start. Otherwise QEMU backs a guest page
	# on its first touch, a host page fault, and creations get slower as Xen hands out
	# never-touched memory: that growth is the emulator's, not the toolstack's
	# (docs/COSTS.md). XENLAB_QEMU_ARGS= (empty) turns it off.
	: "${XENLAB_QEMU_ARGS=-mem-prealloc}"
	export XENLAB_DOM0_MEM XENLAB_MEM XENLAB_QEMU_ARGS
	read_options
	# shellcheck disable=SC2034 # read by build_project (build.sh)
	LAB_WANT_SCALE=1
	setup
	reap_stale
	new_run_dir
	{
		echo '#!/bin/sh'
		echo "exec bench-scale -n $n --churn $n ${XENLAB_SCALE_ARGS:-}"
	} >"$RUN/cmd"
	say "bench: scale, $n guests per tool${XENLAB_SCALE_ARGS:+, $XENLAB_SCALE_ARGS}"
	boot_and_run "$RUN/cmd" "${XENLAB_TIMEOUT:-$((900 + 8 * n))}" bench-scale
	receive_results
	case $BOOT_OUTCOME in
	ok) exit "$SCRIPT_RC" ;;
	timeout) exit 124 ;;
	*) exit 125 ;;
	esac
}

# Turns the files dom0 sent (stream_console) into lab/work/results/<date>/, checked against
# their SHA-256; a .tgz is unpacked there.
receive_results() {
	local entry name sum b64 dest
	[ ${#FILES_RECEIVED[@]} -gt 0 ] || {
		say "no results came out of dom0"
		return
	}
	dest=$WORK/results/$(date +%Y%m%d-%H%M%S)
	mkdir -p "$dest"
	for entry in "${FILES_RECEIVED[@]}"; do
		read -r name sum <<<"$entry"
		b64=$RUN/files/$name.b64
		base64 -d <"$b64" >"$dest/$name" 2>/dev/null || {
			say "error: $name: not valid base64 (console garbled?)"
			continue
		}
		if [ "$(sha256sum <"$dest/$name" | cut -d' ' -f1)" != "$sum" ]; then
			say "error: $name: SHA-256 differs from dom0's (console garbled?); kept as $dest/$name"
			continue
		fi
		case $name in *.tgz)
			tar xzf "$dest/$name" -C "$dest" && rm -f "$dest/$name"
			;;
		esac
	done
	say "results: $dest"
	(cd "$dest" && ls)
}

cmd_demo() {
	setup
	reap_stale
	new_run_dir
	printf '#!/bin/sh\nexport XENLAB_DEMO_RUNS=%s\nexec demo\n' "${XENLAB_DEMO_RUNS:-5}" >"$RUN/cmd"
	boot_and_run "$RUN/cmd" "${XENLAB_TIMEOUT:-900}" demo
	[ "$BOOT_OUTCOME" = ok ] && exit "$SCRIPT_RC"
	exit 125
}

cmd_shell() {
	setup
	reap_stale
	new_run_dir
	build_initrd ""
	qemu_args mon:stdio
	lab_lock
	say "boot: interactive dom0 (Ctrl-a x quits qemu)"
	# in the foreground: it needs the terminal
	"${QEMU[@]}" || true
	lab_unlock
}
