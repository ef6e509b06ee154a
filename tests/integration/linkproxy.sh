# Shell helpers (bash, sourced) for linkproxy.py, shared by tests/integration/lib.sh and
# bench/lib.sh: start the proxy on an ephemeral port and read its stats once they are
# settled. $PYTHON must be set.

LINKPROXY_PY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/linkproxy.py

# linkproxy_start DIR UPSTREAM_HOST:PORT [linkproxy.py options]: starts linkproxy.py in the
# background on 127.0.0.1 (any free port), its stats in DIR/link-stats.json, its request
# log in DIR/link-requests.log and its stderr in DIR/linkproxy.log. Sets LINK (HOST:PORT),
# LINK_PID, LINK_STATS and LINK_LOG; the caller stops LINK_PID. Returns 1 (message on
# stderr) when the proxy prints no port within 10 s.
linkproxy_start() {
	local dir=$1 up=$2 i port=""
	shift 2
	LINK_STATS=$dir/link-stats.json
	LINK_LOG=$dir/link-requests.log
	"$PYTHON" "$LINKPROXY_PY" --listen 127.0.0.1:0 --upstream "$up" --stats "$LINK_STATS" \
		--log "$LINK_LOG" "$@" >"$dir/linkproxy.port" 2>"$dir/linkproxy.log" &
	LINK_PID=$!
	for i in $(seq 100); do
		port=$(head -n 1 "$dir/linkproxy.port")
		[ -z "$port" ] || break
		kill -0 "$LINK_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [ -z "$port" ]; then
		echo "linkproxy.py did not start: $(tail -n 3 "$dir/linkproxy.log")" >&2
		return 1
	fi
	LINK=127.0.0.1:$port
}

# linkproxy_settle: waits (at most 5 s) until every connection through the proxy has ended,
# then until its stats file has been rewritten since (every 100 ms when something changed).
linkproxy_settle() {
	local i
	for i in $(seq 50); do
		jq -e '.active_connections == 0' "$LINK_STATS" >/dev/null 2>&1 && break
		sleep 0.1
	done
	sleep 0.2
}
