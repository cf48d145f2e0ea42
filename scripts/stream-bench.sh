#!/usr/bin/env bash
# How much of the network's speed reaches the user, and whether memory stays
# flat: the two stream benchmarks of docs/PERFORMANCE.md.
#
#   1. Throughput: `dla-edge stream` on an MJPEG file (never drops frames) against
#      inference alone (`dla-tools bench`, same model, threads, machine), run
#      bench -> stream -> bench so a noisy neighbour shows up as a spread.
#   2. Soak: the built-in demo for --soak frames with the web viewer on and one
#      client watching /stream.mjpg (--soak-no-http: neither); resident memory
#      (VmRSS) and its peak (VmHWM) of the running process, sampled from frame 1
#      to the last frame.
#
# usage: scripts/stream-bench.sh [--bin DIR] [--model M] [--threads N]
#                                [--frames N] [--soak N] [--soak-no-http] [--keep DIR]
# Build first: cargo build --release -p dla-firmware -p dla-tools
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
model=models/dla-tiny-seg.onnx
threads=2
frames=300
soak=10000
soak_http=1
keep=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    --soak) soak=$2; shift 2 ;;
    --soak-no-http) soak_http=0; shift ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for b in dla-edge dla-tools; do
  [ -x "$bin/$b" ] || { echo "$bin/$b not found: cargo build --release -p dla-firmware -p dla-tools, or pass --bin DIR" >&2; exit 1; }
done
py=$(command -v python3)
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT

echo "== $(date -u +%FT%TZ) $(uname -m), $(nproc) CPU(s): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== model $model, $threads thread(s)"

# An MJPEG clip of camera-like JPEG scenes at the model's input size.
"$bin/dla-tools" synth --out "$work/scenes" --count 100 --seed 7 --image-format jpg >/dev/null
: > "$work/clip.mjpeg"
for _ in $(seq $(( (frames + 99) / 100 ))); do
  cat "$work"/scenes/images/*.jpg >> "$work/clip.mjpeg"
done

bench() {
  "$bin/dla-tools" bench --model "$model" --threads "$threads" --runs 50 --json \
    | "$py" -c 'import json,sys; b=json.load(sys.stdin); print(b["infer"]["median_ms"], b["total"]["median_ms"])'
}

stream_fps() {  # extra stream arguments...
  "$bin/dla-edge" stream --source "$work/clip.mjpeg" --model "$model" --threads "$threads" \
    --max-frames "$frames" --json "$@" 2>"$work/stream.err" >"$work/stream.jsonl"
  # Steady-state rate: frames after the first 10 over their timestamps' span.
  "$py" - "$work/stream.jsonl" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
ts = [l["timestamp"] for l in lines][10:]
print(f"{(len(ts) - 1) / (ts[-1] - ts[0]):.2f}")
EOF
}

echo
echo "== 1. throughput"
read -r infer1 total1 < <(bench)
fps_nohttp=$(stream_fps --no-http)
summary_nohttp=$(tail -n1 "$work/stream.err")
fps_http=$(stream_fps --http 127.0.0.1:0)
summary_http=$(tail -n1 "$work/stream.err")
read -r infer2 total2 < <(bench)
"$py" - "$infer1" "$total1" "$infer2" "$total2" "$fps_nohttp" "$fps_http" "$frames" <<'EOF'
import sys
i1, t1, i2, t2, nohttp, http = map(float, sys.argv[1:7])
infer = (i1 + i2) / 2
alone = 1000.0 / infer
print(f"inference alone (bench, before/after): {i1:.1f} / {i2:.1f} ms -> {alone:.1f} fps")
print(f"pre+infer+post (bench, before/after):  {t1:.1f} / {t2:.1f} ms -> {1000 / ((t1 + t2) / 2):.1f} fps")
for name, fps in (("stream --no-http", nohttp), ("stream with the viewer", http)):
    print(f"{name:<24} {fps:6.1f} fps = {100 * fps / alone:5.1f} % of inference alone ({sys.argv[7]} frames of an MJPEG file)")
EOF
# The same comparison inside one run: the pipeline's whole-run rate against
# its own mean inference time (robust to a neighbour slowing both).
echo "in-run, --no-http:     ${summary_nohttp##*; whole run }"
echo "in-run, with viewer:   ${summary_http##*; whole run }"

[ "$soak" -gt 0 ] || exit 0
echo
mkfifo "$work/soak.fifo"
if [ "$soak_http" = 1 ]; then
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "== 2. soak: $soak demo frames, as fast as inference allows, viewer on with one client"
  http=(--http "127.0.0.1:$port")
else
  echo "== 2. soak: $soak demo frames, as fast as inference allows, --no-http"
  http=(--no-http)
fi
"$bin/dla-edge" stream --model "$model" --threads "$threads" "${http[@]}" --json --fps 1000 \
  --max-frames "$soak" 2>"$work/soak.err" >"$work/soak.fifo" &
pid=$!
if [ "$soak_http" = 1 ]; then
  # The client: the overlay stream, read and thrown away, from the first frames on.
  (for _ in $(seq 50); do
     curl -sf -o /dev/null "http://127.0.0.1:$port/stream.mjpg" && break
     sleep 0.1
   done) &
  client=$!
fi
cat >"$work/rss.py" <<'EOF'
import sys
pid, last = int(sys.argv[1]), int(sys.argv[2])
# The last frame's line may come as the process exits: sample the one before.
marks = {1, 100, 1000, last // 2, last - 1}
def status_mib(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
for n, _ in enumerate(sys.stdin, 1):
    if n in marks:
        rss, peak = status_mib("VmRSS"), status_mib("VmHWM")
        print(f"frame {n:>6}: RSS {rss:.1f} MiB, peak so far {peak:.1f} MiB", flush=True)
EOF
"$py" "$work/rss.py" "$pid" "$soak" <"$work/soak.fifo" >"$work/soak.txt"
wait "$pid"
if [ "$soak_http" = 1 ]; then
  kill "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
fi
cat "$work/soak.txt"
tail -n1 "$work/soak.err"
