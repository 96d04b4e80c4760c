# With XENLAB_XS_TRACE=1, xenstored logs every request and lib.sh counts them per connection:
# one `xl create -p` and one `chaos create -p` of the noop guest, each on a connection of its
# own, made some requests, and only those count as `new`. Skipped without the trace.
. "$XENLAB_TESTS/lib.sh"

if [ "$XENLAB_XS_TRACE" != 1 ]; then
	echo "skipped: needs XENLAB_XS_TRACE=1 (xenstored's trace)"
	exit 0
fi
printf 'name = "xs-noop"\ntype = "pv"\nkernel = "%s/noop"\nmemory = 2\nvcpus = 1\n' "$GUEST" >noop.cfg

# count TOOL: requests of one paused creation of the noop guest by TOOL; prints "TOTAL NEW".
count() {
	m=$(xs_trace_mark)
	out=$($1 create -p noop.cfg 2>&1) || fail "$1 create -p noop: expected success, got: $out"
	domain_exists xs-noop || fail "$1 create -p: expected a domain xs-noop, xl list: $(xl list)"
	by_conn=$(xs_trace_by_conn_since "$m" | tr '\n' ';')
	new=$(xs_trace_count_since "$m" new)
	all=$(xs_trace_count_since "$m")
	expect_ok "$1 destroy xs-noop" "$1" destroy xs-noop
	echo "$1 create -p: $new requests on its own connection, $all in all; by connection: $by_conn"
	[ "$new" -gt 0 ] || fail "$1 create -p: expected requests on a new connection, got $new: $by_conn"
	[ "$new" -le "$all" ] || fail "new requests ($new) > all requests ($all)"
	echo "XS-REQUESTS $1 $new"
}
count xl
count chaos
