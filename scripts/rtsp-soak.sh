#!/usr/bin/env bash
# The RTSP soak: `dla-edge stream` on an RTSP camera (tests/rtsp_server.py,
# H.264) for --minutes, with the camera killed and restarted twice on the
# same port. Prints how long frames took to resume after each restart and
# the resident memory after warm-up (1 minute) and at the end.
#
# usage: scripts/rtsp-soak.sh [--bin DIR] [--minutes N] [--size WxH] [--fps N] [--threads N]
# Build first: cargo build --release -p dla-firmware
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
minutes=30
size=640x360
fps=10
threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --fps) fps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$bin/dla-edge" ] || { echo "$bin/dla-edge not found: cargo build --release -p dla-firmware" >&2; exit 1; }
work=$(mktemp -d)
server= edge=
cleanup() {
  for p in $server $edge; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
viewer=$(free_port)

start_server() {
  : >"$work/server.out"
  /usr/bin/python3 tests/rtsp_server.py --port "$port" --image models/samples/street-0.jpg \
    --size "$size" --fps "$fps" >"$work/server.out" 2>>"$work/server.err" &
  server=$!
  until grep -q ready "$work/server.out" 2>/dev/null; do sleep 0.1; done
}
stat() {  # field of /stats.json
  python3 - "$viewer" "$1" <<'PY'
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/stats.json", timeout=5))
print(s[sys.argv[2]] if s[sys.argv[2]] is not None else 0)
PY
}

echo "== $(date -u +%FT%TZ) $(uname -m), $(nproc) CPU(s): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== $minutes min of rtsp://127.0.0.1:$port/h264 at $size, $fps fps; built-in model, $threads thread(s)"
start_server
"$bin/dla-edge" stream --source "rtsp://127.0.0.1:$port/h264" --threads "$threads" \
  --http "127.0.0.1:$viewer" >/dev/null 2>"$work/edge.err" &
edge=$!
until stat frames_processed >/dev/null 2>&1; do sleep 0.5; done

total=$((minutes * 60))
t0=$(date +%s)
warm_rss=
restarts=0
while :; do
  now=$(( $(date +%s) - t0 ))
  [ "$now" -ge "$total" ] && break
  if [ -z "$warm_rss" ] && [ "$now" -ge 60 ]; then
    warm_rss=$(stat rss_bytes)
    echo "after warm-up (${now} s): RSS $((warm_rss / 1048576)) MiB, $(stat frames_processed) frames"
  fi
  if { [ "$restarts" = 0 ] && [ "$now" -ge $((total / 3)) ]; } || { [ "$restarts" = 1 ] && [ "$now" -ge $((2 * total / 3)) ]; }; then
    restarts=$((restarts + 1))
    kill "$server"; wait "$server" 2>/dev/null || true
    sleep 2
    before=$(stat frames_processed)
    start_server
    t_restart=$(date +%s.%N)
    until [ "$(stat frames_processed)" -gt "$before" ]; do sleep 0.1; done
    echo "restart $restarts at ${now} s: frames again $(python3 -c "import time; print(f'{time.time() - $t_restart:.1f}')") s after the camera was back"
  fi
  sleep 5
done
end_rss=$(stat rss_bytes)
echo "end (${total} s): RSS $((end_rss / 1048576)) MiB, $(stat frames_processed) frames, $(stat frames_dropped) dropped"
echo "RSS change after warm-up: $(( (end_rss - warm_rss) / 1024 )) KiB"
curl -s "127.0.0.1:$viewer/metrics" | grep -E '^dla_source_reconnects_total|^dla_fps'
