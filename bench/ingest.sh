#!/usr/bin/env bash
# Ingest load benchmark. In one run, against one fresh Tansu broker on this machine, the same
# signed requests (1-4 KiB JSON, 8 tenants) are driven by wrk at:
#   1. hookstream ingest (release build): verify + extract + append, 202 after the broker ack;
#   2. the reference design (bench/reference: FastAPI + uvicorn + confluent-kafka, same contract);
#   3. hookstream ingest with appends discarded: the HTTP ceiling (not durable);
# and a plain Rust rdkafka producer appends the same records as fast as it can (the broker
# ceiling). Prints throughput, p50/p99 latency and the ratios.
#
#   bench/ingest.sh [SECONDS=15] [CONNECTIONS=32] [ENGINE=sqlite]
#
# ENGINE is the broker's storage: `sqlite` (durable, on disk; the broker is the limit) or
# `memory` (Tansu's in-memory engine, over 100 k records/s here: the broker out of the way).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECONDS_PER_RUN="${1:-15}"
CONNECTIONS="${2:-32}"
ENGINE="${3:-sqlite}"
case "$ENGINE" in
  sqlite) STORAGE="sqlite://broker.db" ;;
  memory) STORAGE="memory://tansu/" ;;
  *) echo "ENGINE must be sqlite or memory, not $ENGINE" >&2; exit 2 ;;
esac
ensure_system_packages
ensure_tansu
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
VENV="$HOOKSTREAM_CACHE/bench-venv"
[ -x "$VENV/bin/uvicorn" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r bench/reference/requirements.txt; }

echo "==> building (release)" >&2
cargo build --release --locked --bin hookstream
cargo bench --locked -p hookstream-ingest --bench produce_ceiling --no-run 2>/dev/null
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
HOOKSTREAM="$TARGET/release/hookstream"

WORK="$(mktemp -d /tmp/hookstream-bench.XXXXXX)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

python3 bench/make_requests.py "$WORK" 2000
BROKER_PORT="$(free_port)"
(cd "$WORK" && exec "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" --storage-engine "$STORAGE" >tansu.log 2>&1) &
PIDS+=($!)
BROKERS="127.0.0.1:$BROKER_PORT"
for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$BROKER_PORT") 2>/dev/null && break; sleep 0.1; done

config() { # $1 prefix, $2 port
  cat <<TOML
[kafka]
brokers = "$BROKERS"
topic_prefix = "$1"
partitions = 3
replication_factor = 1
[ingest]
listen = "127.0.0.1:$2"
workers = 2
$(cat "$WORK/tenants.toml")
TOML
}

run_wrk() { # $1 name, $2 base url
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency -s bench/signed.lua "$2" -- "$WORK/requests.tsv" >"$WORK/$1.wrk" 2>&1
  python3 - "$WORK/$1.wrk" "$1" <<'PY' >>"$WORK/results.tsv"
import re, sys
text = open(sys.argv[1]).read()
if "Requests/sec" not in text or "50%" not in text:
    sys.exit(f"wrk did not report a result for {sys.argv[2]}:\n{text}")
def ms(v):
    if not re.search(r"[a-z]+$", v) or not re.match(r"[\d.]+", v):
        sys.exit(f"unreadable latency {v!r} in wrk's report for {sys.argv[2]}:\n{text}")
    n, unit = float(re.match(r"([\d.]+)", v).group(1)), re.search(r"[a-z]+$", v).group(0)
    return n * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print(f"{sys.argv[2]}\t{rps:.0f}\t{p50:.2f}\t{p99:.2f}\t{bad.group(1) if bad else 0}\t{errors.group(1) if errors else '-'}")
PY
}

start_ingest() { # $1 name, $2 prefix, extra args; sets URL and appends to PIDS
  local port; port="$(free_port)"
  config "$2" "$port" >"$WORK/$1.toml"
  RUST_LOG=warn "$HOOKSTREAM" ingest --config "$WORK/$1.toml" "${@:3}" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  URL="http://127.0.0.1:$port"
  wait_http "$URL/healthz"
}

: >"$WORK/results.tsv"
echo "==> hookstream ingest (durable)" >&2
start_ingest hookstream bench.hs.
wait_http "$URL/readyz"
run_wrk hookstream "$URL"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "==> reference: FastAPI + uvicorn + confluent-kafka" >&2
REF_PORT="$(free_port)"
(cd bench/reference && BROKERS="$BROKERS" TENANTS="$WORK/tenants.json" TOPIC="bench.ref.raw" \
  exec "$VENV/bin/uvicorn" app:app --host 127.0.0.1 --port "$REF_PORT" --workers 1 --log-level warning >"$WORK/reference.log" 2>&1) &
PIDS+=($!)
wait_http "http://127.0.0.1:$REF_PORT/docs"
run_wrk reference "http://127.0.0.1:$REF_PORT"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "==> hookstream ingest with appends discarded (HTTP ceiling)" >&2
start_ingest http-ceiling bench.ceiling-http. --bench-discard-appends
run_wrk http-ceiling "$URL"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "==> broker ceiling: Rust rdkafka producer, same records and settings" >&2
CEILING="$(BENCH_BROKERS="$BROKERS" BENCH_REQUESTS="$WORK/requests.tsv" BENCH_SECONDS="$SECONDS_PER_RUN" \
  cargo bench --locked -q -p hookstream-ingest --bench produce_ceiling 2>/dev/null | grep ceiling_records_per_sec)"
echo "$CEILING" >&2

python3 - "$WORK/results.tsv" "$CEILING" "$SECONDS_PER_RUN" "$CONNECTIONS" "$ENGINE" <<'PY'
import sys
rows = {r.split("\t")[0]: r.split("\t") for r in open(sys.argv[1]).read().splitlines()}
ceiling = float(sys.argv[2].split()[0].split("=")[1])
print(f"\nIngest load: wrk -t2 -c{sys.argv[4]} -d{sys.argv[3]}s, 1-4 KiB signed JSON, 8 tenants, Tansu ({sys.argv[5]} engine) on this machine")
print(f"{'target':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}  socket errors")
for name in ["hookstream", "reference", "http-ceiling"]:
    _, rps, p50, p99, bad, errors = rows[name]
    print(f"{name:<14}{rps:>10}{p50:>10}{p99:>10}{bad:>10}  {errors}")
print(f"{'broker-ceiling':<14}{ceiling:>10.0f}  (records/s, producer only)")
hs, ref, http = (float(rows[n][1]) for n in ["hookstream", "reference", "http-ceiling"])
print(f"\nhookstream / reference throughput: {hs / ref:.1f}x   (target >= 10x)")
print(f"reference p99 / hookstream p99:    {float(rows['reference'][3]) / float(rows['hookstream'][3]):.1f}x   (target > 1)")
print(f"hookstream / broker ceiling:       {hs / ceiling:.0%}   (target >= 80% where the broker is the limit)")
print(f"hookstream / HTTP ceiling:         {hs / http:.0%}   (target >= 50%)")
PY
