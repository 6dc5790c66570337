#!/usr/bin/env bash
# Benchmark of the rust and wasm runtimes through HTTP on this machine:
# first compile, repeat initialize, warm execute latency and throughput.
# Starts a release server on a free port with a fresh data dir; the Rust
# template cache (LAMBDA_RUST_CACHE_DIR, default target/bench-rust-cache) is
# kept between runs, so only the first run builds the template's dependencies.
#
#   bench/rust_wasm.sh [sequential-executes] [concurrency] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p lambda --bin lambda --example rust_wasm_bench

data="$(mktemp -d)"
export LAMBDA_RUST_CACHE_DIR="${LAMBDA_RUST_CACHE_DIR:-$PWD/$target/bench-rust-cache}"
HOST=127.0.0.1 PORT=0 LAMBDA_DATA_DIR="$data" RUST_LOG=warn LAMBDA_RUST_PRECOMPILE=false \
  "$target/release/lambda" serve >"$data/server.out" 2>"$data/server.err" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
  url="$(sed -n 's/^lambda listening on //p' "$data/server.out")"
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$data/server.err" >&2; exit 1; }
echo "server $url (pid $server), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$target/release/examples/rust_wasm_bench" "$url" "$@"
