#!/usr/bin/env bash
# What an RTSP camera costs: H.264 decode time per frame at 640x360 and
# 1280x720, the stream's end-to-end FPS against inference alone in the same
# run, and the median times from a frame's capture ("glass", by the camera's
# RTCP sender reports) and from its arrival to its labels. The camera is
# tests/rtsp_server.py (GStreamer's RTSP server on 127.0.0.1, a street scene at
# --fps, x264 baseline), so the server's encoding shares this machine's CPU:
# the script says how much of a core it took.
#
# usage: scripts/rtsp-bench.sh [--bin DIR] [--threads N] [--frames N] [--fps N] [--keep DIR]
# Build first: cargo build --release -p dla-firmware -p dla-tools; needs Debian's
# python3-gi, gir1.2-gst-rtsp-server-1.0 and GStreamer's good and ugly plugins.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
threads=2
frames=150
fps=30
keep=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    --fps) fps=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for b in dla-edge dla-tools; do
  [ -x "$bin/$b" ] || { echo "$bin/$b not found: cargo build --release -p dla-firmware -p dla-tools" >&2; exit 1; }
done
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
server=
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; [ -n "$keep" ] || rm -rf "$work"; }
trap cleanup EXIT
# CPU seconds a process has used (user + system).
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

echo "== $(date -u +%FT%TZ) $(uname -m), $(nproc) CPU(s): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== built-in model, $threads thread(s), camera at $fps fps, $frames frames per size"
bench_ms=$("$bin/dla-tools" bench --model models/dla-tiny-seg-int8.onnx --threads "$threads" --runs 30 --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["infer"]["median_ms"])')
echo "inference alone (dla-tools bench): $bench_ms ms median"

for size in 640x360 1280x720; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  /usr/bin/python3 tests/rtsp_server.py --port "$port" --image models/samples/street-0.jpg \
    --size "$size" --fps "$fps" >"$work/server.out" 2>"$work/server.err" &
  server=$!
  until grep -q ready "$work/server.out" 2>/dev/null; do sleep 0.1; done
  cpu0=$(cpu_seconds "$server"); t0=$(date +%s.%N)
  "$bin/dla-edge" stream --source "rtsp://127.0.0.1:$port/h264" --threads "$threads" --no-http \
    --json --max-frames "$frames" 2>"$work/stream.err" \
    | python3 -c '
import json, sys, time, statistics
lines, lat, glass = [], [], []
for l in sys.stdin:
    now = time.time()
    d = json.loads(l)
    lines.append(d)
    lat.append(1000 * (now - d["timestamp"]))
    glass.append(1000 * (now - d["camera_time"]) if "camera_time" in d else None)
lines, lat, glass = lines[10:], lat[10:], [g for g in glass[10:] if g is not None]
dec = statistics.median(l["latency_ms"]["decode"] for l in lines)
span = lines[-1]["timestamp"] - lines[0]["timestamp"]
g = f"{statistics.median(glass):.0f} ms" if glass else "n/a (no sender reports)"
print(f"{sys.argv[1]:>9}: decode {dec:.2f} ms/frame (median), end to end {(len(lines) - 1) / span:.1f} fps, "
      f"arrival to labels {statistics.median(lat):.0f} ms, glass to labels {g} (medians)")
' "$size"
  cpu1=$(cpu_seconds "$server"); t1=$(date +%s.%N)
  echo "           the camera (server) took $(python3 -c "print(round(100 * ($cpu1 - $cpu0) / ($t1 - $t0)))") % of a core"
  last=$(tail -n1 "$work/stream.err")
  echo "           in-run: whole run ${last##*; whole run }"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
done
