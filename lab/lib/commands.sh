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

cmd_test() {
	local tests=() passed failed
	mapfile -t tests < <(select_tests "$@")
	[ ${#tests[@]} -gt 0 ] || die "no lab test matches: $*"
	setup
	reap_stale
	new_run_dir
	{
		echo '#!/bin/sh'
		echo "export XENLAB_TEST_TIMEOUT=${XENLAB_TEST_TIMEOUT:-600}"
		echo "export XENLAB_RETRIES=${XENLAB_RETRIES:-1}"
		echo "exec run-tests ${tests[*]}"
	} >"$RUN/cmd"
	say "tests: ${tests[*]}"
	boot_and_run "$RUN/cmd" "${XENLAB_TIMEOUT:-$((300 + 300 * ${#tests[@]}))}" test
	# a test that never finished (machine died or timed out) failed, so did those never started
	passed=$((${#TESTS_DONE[@]} - ${#TESTS_FAILED[@]}))
	failed=$((${#tests[@]} - passed))
	[ -z "$CURRENT_TEST" ] || say "test $CURRENT_TEST did not finish ($BOOT_OUTCOME)"
	[ ${#TESTS_FAILED[@]} -eq 0 ] || say "failed: ${TESTS_FAILED[*]}"
	echo "$passed passed, $failed failed"
	if [ "$failed" -ne 0 ]; then exit 1; fi
	exit 0
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
