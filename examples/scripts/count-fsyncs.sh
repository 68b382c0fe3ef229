#!/usr/bin/env bash
# Counts the fsync/fdatasync calls a 1-node `kv serve` makes while it serves
# PUTS puts (default 20), for one engine, under strace. Durability check of
# issue #12: every acknowledged put must be covered by an fsync, so the count
# must be at least PUTS on either engine.
#
#   examples/scripts/count-fsyncs.sh etcd
#   examples/scripts/count-fsyncs.sh openraft
#
# Needs strace (apt-get install strace); builds kv in release mode.
set -euo pipefail
engine="${1:?usage: $0 etcd|openraft [puts]}"
puts="${2:-20}"
cd "$(dirname "$0")/../.."
command -v strace >/dev/null || { echo "strace is not installed (apt-get install strace)" >&2; exit 2; }
cargo build --release -q -p raftengine-examples --bin kv
work="$(mktemp -d)"
# Stop kv itself (strace ends with its tracee), then remove the data.
trap 'pkill -f -- "--data-dir $work/n1" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
peer="127.0.0.1:$(free_port)"
addr="127.0.0.1:$(free_port)"
./target/release/kv gen-certs --out "$work/certs" n1 >/dev/null
strace -f -qq -e trace=fdatasync,fsync -o "$work/trace" \
  ./target/release/kv serve --engine "$engine" --id n1 --listen "$peer" --api "$addr" \
  --peer-ca "$work/certs/ca.pem" --peer-cert "$work/certs/n1.pem" --peer-key "$work/certs/n1.key" \
  --data-dir "$work/n1" --peers "n1=$peer" --bootstrap >"$work/log" 2>&1 &
server=$!
for _ in $(seq 100); do
  ./target/release/kv status --addr "$addr" 2>/dev/null | grep -q "]: Leader" && break
  sleep 0.1
done
before=$(grep -cE 'fdatasync|fsync' "$work/trace" || true)
for i in $(seq "$puts"); do
  ./target/release/kv put --addr "$addr" "key$i" "value$i" >/dev/null
done
after=$(grep -cE 'fdatasync|fsync' "$work/trace" || true)
echo "engine=$engine puts=$puts fsyncs_during_puts=$((after - before)) fsyncs_at_startup=$before"
if (( after - before < puts )); then
  echo "FAIL: fewer fsyncs than acknowledged puts" >&2
  exit 1
fi
