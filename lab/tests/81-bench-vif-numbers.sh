# Benchmark (no timing is asserted): the ping unikernel with one vif, created by
#   xl          (libxl's vif-bridge hotplug script, Linux netback)
#   xl+xendevd  (run_hotplug_scripts=0, xendevd attaches the vif; netback)
#   chaos-xs    (chaos on the Xenstore plane, xendevd, netback)
#   chaos-noxs  (chaos on the NoXS plane, xendevd's userspace vif backend)
# For each, NOXS_BENCH_RUNS creations (default 5): the median time of the create command and
# the median time from its start to the guest's first ping reply (dom0 pings every 20 ms from
# just before the create; the first reply's seq * 20 ms + its round trip; ARP retries every
# 10 ms and keeps only the newest unresolved packet, so a reply's seq says when it was sent). Then, through the kernel (netback) and
# the userspace (xendevd) backend, with the same guest: round-trip times of 50 pings, the
# request-response rate (`ping -A`, one ping in flight) and what a 1000/s flood gets back.
. "$XENLAB_TESTS/lib.sh"

[ -d /sys/class/net/xenbr0/brif ] || fail "xenbr0: expected a Linux bridge, not found"
RUNS=${NOXS_BENCH_RUNS:-5}
XENDEVD_PID=
chaos reap --watch >reaper.log 2>&1 &
reaper=$!
pinger=
cleanup() {
	[ -n "$pinger" ] && kill "$pinger" 2>/dev/null
	for d in $(chaos list 2>/dev/null | awk 'NR > 1 && $1 ~ /^bn-/ { print $1 }'); do
		chaos destroy "$d" >/dev/null 2>&1
	done
	for d in $(xl list 2>/dev/null | awk 'NR > 1 && $1 ~ /^bn-/ { print $1 }'); do
		xl destroy "$d" >/dev/null 2>&1
	done
	kill "$reaper" 2>/dev/null
	stop_xendevd
	xl_conf_restore
	for k in retrans_time_ms mcast_solicit unres_qlen_bytes; do
		[ -f "neigh.$k" ] && cat "neigh.$k" >"$NEIGH/$k"
	done
}
trap cleanup EXIT
bridge_addr xenbr0 10.99.0.1/24
# ARP answers are part of "the guest answers"; the kernel's 1 s retry would hide the rest.
NEIGH=/proc/sys/net/ipv4/neigh/xenbr0
for k in retrans_time_ms mcast_solicit unres_qlen_bytes; do cp "$NEIGH/$k" "neigh.$k"; done
echo 10 >"$NEIGH/retrans_time_ms"
echo 10000 >"$NEIGH/mcast_solicit"
echo 0 >"$NEIGH/unres_qlen_bytes"

# bench_cfg NAME IP PLANE: writes ./NAME.cfg (PLANE: xenstore or noxs) and prints its path.
bench_cfg() {
	cat >"$PWD/$1.cfg" <<-EOF2
	name = "$1"
	type = "pv"
	kernel = "$GUEST/ping"
	memory = 4
	vcpus = 1
	vif = ['bridge=xenbr0,ip=$2']
	on_poweroff = "destroy"
	on_crash = "preserve"
	$([ "$3" = noxs ] && echo 'chaos_control_plane = "noxs"')
	EOF2
	echo "$PWD/$1.cfg"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.0f", v[int((NR + 1) / 2)]; else print "-" }'; }
ms() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.0f", (e - s) * 1000 }'; }
gone() {
	case "$1" in
	xl*) ! domain_exists "$2" ;;
	*) ! chaos list | awk 'NR > 1 { print $1 }' | grep -qx "$2" ;;
	esac
}

# run TOOL NAME IP: one creation; appends "create_ms first_reply_ms" to TOOL.times.
run() {
	plane=xenstore
	[ "$1" = chaos-noxs ] && plane=noxs
	cfg=$(bench_cfg "$2" "$3" "$plane")
	ping -i 0.02 -w 120 "$3" >ping.out 2>&1 &
	pinger=$!
	t0=$(now)
	case "$1" in
	xl*) out=$(xl create -q "$cfg" 2>&1) ;;
	*) out=$(chaos create "$cfg" 2>&1) ;;
	esac || fail "$1 create $2: expected success, got: $out"
	t1=$(now)
	wait_for_line ping.out 'bytes from' 60 ||
		fail "$1 $2: expected a ping reply within 60s, got: $(tail -n 2 ping.out); console: $(tail -n 2 "$(console_log "$2")" 2>&1 | tr -d '\r')"
	first=$(grep -m1 'bytes from' ping.out)
	seq=$(echo "$first" | sed -n 's/.*seq=\([0-9]*\).*/\1/p')
	rtt=$(echo "$first" | sed -n 's/.*time=\([0-9.]*\).*/\1/p')
	kill "$pinger" 2>/dev/null
	wait "$pinger" 2>/dev/null
	pinger=
	echo "$(ms "$t0" "$t1") $(awk -v s="$seq" -v r="$rtt" 'BEGIN { printf "%.0f", s * 20 + r }')" >>"$1.times"
	case "$1" in
	xl*) xl destroy "$2" ;;
	*) chaos destroy "$2" >/dev/null ;;
	esac
	wait_until 30 gone "$1" "$2" || fail "$1 $2: expected gone after destroy"
}

# tool TOOL: RUNS creations, one line of medians.
tool() {
	: >"$1.times"
	i=1
	while [ "$i" -le "$RUNS" ]; do
		run "$1" "bn-$1-$i" "10.99.0.$((40 + i))"
		i=$((i + 1))
	done
	printf '%-12s create %6s ms   first ping reply %6s ms   (runs: %s)\n' "$1" \
		"$(cut -d' ' -f1 "$1.times" | median)" "$(cut -d' ' -f2 "$1.times" | median)" \
		"$(tr '\n' ' ' <"$1.times")"
}

# xl with its hotplug script, xendevd not running.
xl_hotplug_scripts 1
tool xl
xl_hotplug_scripts 0
start_xendevd xendevd.log
tool xl+xendevd
tool chaos-xs
tool chaos-noxs

# rate BACKEND PLANE IP: RTTs, request-response rate, flood, against one guest.
rate() {
	out=$(chaos create "$(bench_cfg "bn-rate-$1" "$3" "$2")" 2>&1) || fail "chaos create bn-rate-$1: expected success, got: $out"
	wait_until 60 ping -c 1 -W 1 "$3" >/dev/null || fail "bn-rate-$1: expected it to answer within 60s"
	rtt=$(ping -c 50 -i 0.02 -q "$3" | grep round-trip)
	t0=$(now)
	rr=$(ping -A -c 1000 -q "$3" | grep -o '[0-9]* packets received' | cut -d' ' -f1)
	t1=$(now)
	fl=$(ping -i 0.001 -c 3000 -W 3 -q "$3" | grep -o '[0-9]* packets received' | cut -d' ' -f1)
	t2=$(now)
	echo "$1: $rtt"
	echo "$1: ping -A: $rr of 1000 in $(ms "$t0" "$t1") ms = $(awk -v n="$rr" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", n / (e - s) }') replies/s"
	echo "$1: 3000 pings at 1000/s: $fl answered in $(ms "$t1" "$t2") ms = $(awk -v n="$fl" -v s="$t1" -v e="$t2" 'BEGIN { printf "%.0f", n / (e - s) }') replies/s"
	chaos destroy "bn-rate-$1" >/dev/null || fail "chaos destroy bn-rate-$1 failed"
}
rate netback xenstore 10.99.0.60
rate xendevd noxs 10.99.0.61
