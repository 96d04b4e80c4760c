# Xen is up and xl talks to it: xl info reports Xen 4.17, xl list shows Domain-0.
. "$XENLAB_TESTS/lib.sh"

info=$(xl info 2>&1) || fail "xl info: expected success, got: $info"
version=$(echo "$info" | sed -n 's/^xen_version *: *//p')
expect_eq "xen major.minor" "4.17" "${version%.*}"

list=$(xl list 2>&1) || fail "xl list: expected success, got: $list"
dom0=$(echo "$list" | awk '$1 == "Domain-0" { print $2 }')
expect_eq "Domain-0 id in xl list" "0" "$dom0"

[ -e /sys/class/net/xenbr0 ] || fail "bridge xenbr0: expected to exist, it does not"
echo "xen $version, $(echo "$info" | sed -n 's/^free_memory *: *//p') MiB free"
