# The project's binaries are in dom0's PATH and load (all shared libraries present).
. "$XENLAB_TESTS/lib.sh"

[ -x /usr/bin/chaos ] || fail "/usr/bin/chaos: expected an executable, found none"
for bin in chaos xendevd chaosd; do
	command -v "$bin" >/dev/null || continue
	out=$("$bin" --help 2>&1)
	rc=$?
	case "$out" in
	*"error while loading shared libraries"*) fail "$bin: expected to load, got: $out" ;;
	esac
	[ $rc -ne 126 ] && [ $rc -ne 127 ] || fail "$bin --help: expected to run, got rc=$rc: $out"
	echo "$bin runs (--help rc=$rc)"
done
