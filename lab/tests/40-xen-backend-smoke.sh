#!/bin/sh
# Lab test (runs in dom0): every operation of libchaos's Xen backend on real Xen.
# Needs the example binary at /usr/bin/xen_smoke (override with XEN_SMOKE=path):
#   cargo build --release -p libchaos --example xen_smoke
#   -> target/release/examples/xen_smoke, installed in the dom0 image as /usr/bin/xen_smoke
# Exit 0 = pass.
BIN=${XEN_SMOKE:-/usr/bin/xen_smoke}
[ -x "$BIN" ] || { echo "40-xen-backend-smoke: $BIN missing"; exit 1; }

OUT=/tmp/xen_smoke.out
"$BIN" > "$OUT" 2>&1
rc=$?
cat "$OUT"
[ "$rc" -eq 0 ] || { echo "40-xen-backend-smoke: xen_smoke exit $rc"; exit 1; }
grep -qx 'SMOKE PASS' "$OUT" || { echo "40-xen-backend-smoke: no PASS line"; exit 1; }

# While it existed, `xl list` (run by xen_smoke) showed the domain chaos created.
domid=$(sed -n 's/^SMOKE domid //p' "$OUT")
[ -n "$domid" ] || { echo "40-xen-backend-smoke: no domid line"; exit 1; }
if ! grep '^SMOKE xl-list ' "$OUT" | awk -v d="$domid" '$4 == d || $3 == d { f = 1 } END { exit !f }'; then
  echo "40-xen-backend-smoke: xl list did not show domain $domid"; exit 1
fi
# And it is gone now.
if xl list 2>/dev/null | awk -v d="$domid" 'NR > 1 && ($2 == d || $1 == d) { f = 1 } END { exit !f }'; then
  echo "40-xen-backend-smoke: domain $domid still in xl list after destroy"; exit 1
fi
echo "40-xen-backend-smoke: PASS"
exit 0
