# 50 paused noop guests created by chaos, then destroyed; `xl list` and `chaos list` agree on
# which domains exist (ids and names) after every step.
. "$XENLAB_TESTS/lib.sh"

n=${CHAOS_PAUSED_COUNT:-50}
printf 'name = "p"\nkernel = "%s/noop"\nmemory = 2\n' "$GUEST" >p.cfg

# "id name" lines, sorted, for both tools
xl_view() { xl list | awk 'NR > 1 { print $2, $1 }' | sort; }
chaos_view() { chaos list | awk 'NR > 1 { print $2, $1 }' | sort; }
agree() {
	a=$(xl_view)
	b=$(chaos_view)
	[ "$a" = "$b" ] || fail "$1: xl list and chaos list differ: xl: $(echo "$a" | tr '\n' ' ') / chaos: $(echo "$b" | tr '\n' ' ')"
}

start=$(now)
i=1
while [ $i -le "$n" ]; do
	out=$(chaos create -p p.cfg "name=\"p$i\"" 2>&1) || fail "create p$i: expected success, got: $out"
	agree "after creating p$i"
	i=$((i + 1))
done
echo "created $n paused guests in $(elapsed "$start")s (with a list comparison after each)"
expect_eq "guests running" "$n" "$(guest_count)"
expect_eq "paused guests in xl list" "$n" "$(xl list | awk 'NR > 2 && $5 ~ /p/' | wc -l)"

start=$(now)
i=1
while [ $i -le "$n" ]; do
	out=$(chaos destroy "p$i" 2>&1) || fail "destroy p$i: expected success, got: $out"
	agree "after destroying p$i"
	i=$((i + 1))
done
echo "destroyed $n guests in $(elapsed "$start")s"
expect_eq "guests left" 0 "$(guest_count)"
