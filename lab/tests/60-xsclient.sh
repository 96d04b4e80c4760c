# libchaos's XsClient against the real xenstored, over its unix socket and over /dev/xen/xenbus:
# read/write/mkdir/rm/directory, perms, transactions (commit, abort, conflict), DIRECTORY_PART
# with 300 children, watches. The checker is libchaos/examples/xs_lab_check.rs, built with
# `cargo build --release -p libchaos --example xs_lab_check` and installed as /usr/bin/xs-lab-check.
. "$XENLAB_TESTS/lib.sh"

command -v xs-lab-check >/dev/null || fail "xs-lab-check: expected in PATH (lab harness copies target/release/examples/xs_lab_check), not found"
out=$(xs-lab-check 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || fail "xs-lab-check: expected all checks to pass, rc=$rc"
# Nothing left behind in the store.
left=$(xenstore-ls /tool/chaos-lab-check 2>/dev/null)
expect_eq "leftovers under /tool/chaos-lab-check" "" "$left"
