#!/usr/bin/env bash
# A three-node NATS JetStream cluster and two osmium-server nodes on it, on loopback, for
# trying replicated engine nodes out (the tests start their own on free ports). See --help.
set -euo pipefail

NODES=3
ENGINES_DEFAULT=2
STATE_FILE="${TMPDIR:-/tmp}/osmium-cluster.state"
READY_TIMEOUT_S=20

usage() {
  cat <<USAGE
Usage: bash scripts/cluster.sh [start] [--detach] [--client-port PORT] [--engines N] [--engine-port PORT] [--keep]
       bash scripts/cluster.sh stop [--keep]
       bash scripts/cluster.sh status
       bash scripts/cluster.sh --help

start (the default) runs three clustered nats-server nodes with JetStream on 127.0.0.1:
  n1, n2, n3 serve clients on PORT, PORT+1, PORT+2 (default 4222..4224), talk to each
  other on PORT+2000.. (cluster routes) and report on http://127.0.0.1:PORT+4000..
  (monitoring: /varz, /jsz?streams=1). Their data goes to a new temporary directory.
  In the foreground, Ctrl-C stops them and removes the directory; with --detach they
  keep running until 'stop'. --keep leaves the directory (data and logs) in place.
  Then N (--engines, default $ENGINES_DEFAULT, 0 for none) osmium-server nodes serve WebSocket
  clients on 127.0.0.1:PORT, PORT+1.. (--engine-port, default 7070) with /metrics on
  PORT+100.., each with --log nats://<the three nodes> --node-id K and its own data
  directory DIR/osmium-K (the binary: \$OSMIUM_SERVER, else target/release/osmium-server
  under \$CARGO_TARGET_DIR or the workspace; build it with
  cargo build --release -p osmium-gateway). Sign-in tokens: osmium-server token create
  --data-dir DIR/osmium-K ... on each node (tokens are per node).

stop    stops a detached cluster and removes its directory (unless --keep).
status  says which nodes run and where their data and logs are.

An osmium-cluster JetStreamLog connects with all three URLs, for example
  JetStreamLogConfig::with_servers(vec!["nats://127.0.0.1:4222".into(),
    "nats://127.0.0.1:4223".into(), "nats://127.0.0.1:4224".into()])
and creates its streams (OSMIUM_LOG, OSMIUM_LOG_IDEM: 3 replicas, never deleting) on open.
Try failures: kill -9 a node's pid (status lists them) and start it again with the
command in DIR/nN.cmd.
USAGE
}

command="start"; detach=0; keep=0; client_port=4222; engines=$ENGINES_DEFAULT; engine_port=7070
while [ $# -gt 0 ]; do
  case "$1" in
    start|stop|status) command="$1" ;;
    --detach) detach=1 ;;
    --keep) keep=1 ;;
    --client-port) shift; client_port="${1:?--client-port needs a number}" ;;
    --engines) shift; engines="${1:?--engines needs a number}" ;;
    --engine-port) shift; engine_port="${1:?--engine-port needs a number}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_nodes() { # DIR
  local dir="$1" pid
  # The osmium-server nodes first (SIGTERM: they finish calls in flight), then NATS.
  for pidfile in "$dir"/osmium-*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  for pidfile in "$dir"/n*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
  done
  for pidfile in "$dir"/n*.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  if [ "$keep" -eq 1 ]; then
    echo "stopped; data and logs kept in $dir"
  else
    rm -rf "$dir"
    echo "stopped; removed $dir"
  fi
}

case "$command" in
  stop)
    [ -f "$STATE_FILE" ] || { echo "no detached cluster (no $STATE_FILE)"; exit 0; }
    dir="$(cat "$STATE_FILE")"
    stop_nodes "$dir"
    rm -f "$STATE_FILE"
    exit 0 ;;
  status)
    [ -f "$STATE_FILE" ] || { echo "no detached cluster (no $STATE_FILE)"; exit 0; }
    dir="$(cat "$STATE_FILE")"
    echo "directory: $dir"
    for i in $(seq 1 $NODES); do
      pid="$(cat "$dir/n$i.pid" 2>/dev/null || echo -)"
      if [ "$pid" != - ] && kill -0 "$pid" 2>/dev/null; then state="running (pid $pid)"; else state="not running"; fi
      echo "n$i: $state, $(sed -n 's/^listen: /nats:\/\//p' "$dir/n$i.conf"), log $dir/n$i.log"
    done
    for pidfile in "$dir"/osmium-*.pid; do
      [ -f "$pidfile" ] || continue
      node="$(basename "$pidfile" .pid)"; pid="$(cat "$pidfile")"
      if kill -0 "$pid" 2>/dev/null; then state="running (pid $pid)"; else state="not running"; fi
      echo "$node: $state, command $dir/$node.cmd, log $dir/$node.log"
    done
    exit 0 ;;
esac

bash "$(dirname "$0")/ensure-nats-server.sh"
nats_server="${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"

if [ -f "$STATE_FILE" ]; then
  echo "error: a detached cluster may be running ($(cat "$STATE_FILE")): bash scripts/cluster.sh stop" >&2
  exit 1
fi
for i in $(seq 0 $((NODES - 1))); do
  for port in $((client_port + i)) $((client_port + 2000 + i)) $((client_port + 4000 + i)); do
    if port_in_use "$port"; then echo "error: port $port is in use (choose another --client-port)" >&2; exit 1; fi
  done
done

dir="$(mktemp -d "${TMPDIR:-/tmp}/osmium-cluster.XXXXXX")"
routes=""
for i in $(seq 0 $((NODES - 1))); do routes="$routes${routes:+, }nats-route://127.0.0.1:$((client_port + 2000 + i))"; done
for i in $(seq 1 $NODES); do
  cat > "$dir/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((client_port + i - 1))
http: 127.0.0.1:$((client_port + 4000 + i - 1))
max_payload: 8388608
jetstream {
  store_dir: "$dir/n$i"
}
cluster {
  name: osmium-local
  listen: 127.0.0.1:$((client_port + 2000 + i - 1))
  routes: [$routes]
}
CONF
  echo "\"$nats_server\" --config \"$dir/n$i.conf\" >>\"$dir/n$i.log\" 2>&1 & echo \$! >\"$dir/n$i.pid\"" > "$dir/n$i.cmd"
  bash "$dir/n$i.cmd"
done

cleanup() { trap - EXIT INT TERM; stop_nodes "$dir"; exit 0; }
if [ "$detach" -eq 0 ]; then trap cleanup EXIT INT TERM; fi

for i in $(seq 1 $NODES); do
  port=$((client_port + i - 1))
  for _ in $(seq $((READY_TIMEOUT_S * 10))); do port_in_use "$port" && break; sleep 0.1; done
  if ! port_in_use "$port"; then
    echo "error: n$i is not listening on $port after ${READY_TIMEOUT_S}s; its log:" >&2
    tail -n 20 "$dir/n$i.log" >&2
    exit 1
  fi
done

urls="nats://127.0.0.1:$client_port,nats://127.0.0.1:$((client_port + 1)),nats://127.0.0.1:$((client_port + 2))"
echo "three NATS nodes with JetStream: $urls"

# The osmium-server nodes, each a full replica of the log (--log $urls).
if [ "$engines" -gt 0 ]; then
  repo="$(cd "$(dirname "$0")/.." && pwd)"
  server="${OSMIUM_SERVER:-${CARGO_TARGET_DIR:-$repo/target}/release/osmium-server}"
  if [ ! -x "$server" ]; then
    echo "error: no osmium-server at $server: cargo build --release -p osmium-gateway (or set OSMIUM_SERVER)" >&2
    exit 1
  fi
  for k in $(seq 1 "$engines"); do
    listen="127.0.0.1:$((engine_port + k - 1))"; metrics="127.0.0.1:$((engine_port + 100 + k - 1))"
    echo "\"$server\" --data-dir \"$dir/osmium-$k\" --listen $listen --metrics-listen $metrics --log $urls --node-id $k >>\"$dir/osmium-$k.log\" 2>&1 & echo \$! >\"$dir/osmium-$k.pid\"" > "$dir/osmium-$k.cmd"
    bash "$dir/osmium-$k.cmd"
  done
  for k in $(seq 1 "$engines"); do
    port=$((engine_port + k - 1))
    for _ in $(seq $((READY_TIMEOUT_S * 10))); do port_in_use "$port" && break; sleep 0.1; done
    if ! port_in_use "$port"; then
      echo "error: osmium-$k is not listening on $port after ${READY_TIMEOUT_S}s; its log:" >&2
      tail -n 20 "$dir/osmium-$k.log" >&2
      exit 1
    fi
    echo "osmium-$k: ws://127.0.0.1:$port/ (metrics http://127.0.0.1:$((engine_port + 100 + k - 1))/metrics, data $dir/osmium-$k)"
  done
fi
echo "monitoring: http://127.0.0.1:$((client_port + 4000))/jsz?streams=1 (and +1, +2)"
echo "data and logs: $dir"
if [ "$detach" -eq 1 ]; then
  echo "$dir" > "$STATE_FILE"
  echo "detached: bash scripts/cluster.sh stop   # stops them and removes $dir"
else
  echo "Ctrl-C stops them and removes $dir"
  while true; do
    for i in $(seq 1 $NODES); do
      if ! kill -0 "$(cat "$dir/n$i.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
        echo "n$i is not running (killed? restart it with: bash $dir/n$i.cmd)" >&2
      fi
    done
    sleep 5
  done
fi
