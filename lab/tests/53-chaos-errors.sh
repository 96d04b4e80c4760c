# Failed creations leave nothing behind: a kernel file that is not a kernel, and more memory
# than the host has, each give a clear error, and the domain list, Xen's free memory and chaos's
# state directory are as they were.
. "$XENLAB_TESTS/lib.sh"

free_mem() { xl info | awk '/^free_memory/ { print $3 }'; }
# shellcheck disable=SC2012 # ls of names chaos writes (domids): no odd characters
snapshot() { echo "domains: $(xl list | awk 'NR > 1 { print $1 }' | sort | tr '\n' ' ') free: $(free_mem) state: $(ls /run/chaos/domains 2>/dev/null | tr '\n' ' ')"; }

before=$(snapshot)
echo "before: $before"

echo 'this is not a kernel' >notakernel
printf 'name = "bad-kernel"\nkernel = "%s/notakernel"\nmemory = 2\n' "$PWD" >bad-kernel.cfg
if out=$(chaos create bad-kernel.cfg 2>&1); then fail "chaos create with a text file as kernel: expected an error, it succeeded"; fi
echo "not a kernel: $out"
expect_contains "error names the file" "notakernel" "$out"
expect_eq "after the bad kernel" "$before" "$(snapshot)"

host_mib=$(xl info | awk '/^total_memory/ { print $3 }')
big=$((host_mib * 2))
printf 'name = "too-big"\nkernel = "%s/noop"\nmemory = %s\n' "$GUEST" "$big" >too-big.cfg
if out=$(chaos create too-big.cfg 2>&1); then fail "chaos create with memory=$big (host has $host_mib MiB): expected an error, it succeeded"; fi
echo "too much memory: $out"
expect_contains "error says memory" "memory" "$out"
expect_eq "after the oversized guest" "$before" "$(snapshot)"
