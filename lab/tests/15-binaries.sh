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
	if [ $rc -eq 126 ] || [ $rc -eq 127 ]; then fail "$bin --help: expected to run, got rc=$rc: $out"; fi
	echo "$bin runs (--help rc=$rc)"
done
