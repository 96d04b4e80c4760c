# xl creates a paused PV guest with a vif on xenbr0: Xen's hotplug script (bash) attaches the backend
# interface to the bridge; destroying the guest removes it.
. "$XENLAB_TESTS/lib.sh"

name=pvvif
cfg=$(pv_linux_cfg $name 'vif = [ "bridge=xenbr0" ]')
out=$(xl create -q -p "$cfg" 2>&1) || fail "xl create -p with vif: expected success, got: $out"
domid=$(xl domid $name)
vif=vif$domid.0
[ -e "/sys/class/net/$vif" ] || fail "backend interface: expected $vif, got: $(echo /sys/class/net/*)"
[ -e "/sys/class/net/xenbr0/brif/$vif" ] ||
	fail "bridge ports of xenbr0: expected $vif, got: '$(echo /sys/class/net/xenbr0/brif/*)'"
expect_eq "vifs in xl network-list" 1 "$(xl network-list $name | awk 'NR > 1' | wc -l)"
xl destroy $name || fail "xl destroy $name failed"
[ ! -e "/sys/class/net/$vif" ] || fail "after destroy: expected $vif gone, it is still there"
