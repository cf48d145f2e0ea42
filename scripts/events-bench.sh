#!/usr/bin/env bash
# What events out cost the pipeline: `dla-edge run` on the same MJPEG clip
# (a file never drops frames, so the rate is the pipeline's own), without and
# with MQTT (a local mosquitto, discovery, coverage every second, snapshots on
# trigger), a webhook (a local receiver) and the viewer's login, alternating
# plain/events runs so a noisy neighbour hits both. The clip alternates street
# scenes and the same scenes upside down every --period frames, so the rule
# triggers and releases once per period (a rule that fires every second at
# 15 fps with the default 15; --period 2 is a stress test). Broker and
# receiver run on this machine too, so their CPU time counts against the pipeline.
#
# usage: scripts/events-bench.sh [--bin DIR] [--threads N] [--frames N] [--rounds N]
#                                [--period N] [--keep DIR]
# Build first: cargo build --release -p dla-firmware; needs mosquitto and Python 3 with Pillow
# (.venv from .ci/run has it).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release
threads=2
frames=300
rounds=3
period=15
keep=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --frames) frames=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --period) period=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$bin/dla-edge" ] || { echo "$bin/dla-edge not found: cargo build --release -p dla-firmware, or pass --bin DIR" >&2; exit 1; }
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosquitto" ] || { echo "mosquitto not found: apt install mosquitto" >&2; exit 1; }
py=${DLA_PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=$(command -v python3)
work=${keep:-$(mktemp -d)}
mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "$keep" ] || rm -rf "$work"; }
trap cleanup EXIT

echo "== $(date -u +%FT%TZ) $(uname -m), $(nproc) CPU(s): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== built-in model, $threads thread(s), $frames frames per run, $rounds round(s), scene flips every $period frames"

# The clip: the 4 street samples in turn, upright for --period frames, then upside down.
"$py" - "$work/clip.mjpeg" "$frames" "$period" <<'EOF'
import io, sys
from PIL import Image
streets = [Image.open(f"models/samples/street-{i}.jpg").convert("RGB") for i in range(4)]
flipped = [s.transpose(Image.FLIP_TOP_BOTTOM) for s in streets]
jpeg = lambda img: (lambda b: (img.save(b, "JPEG", quality=90), b.getvalue())[1])(io.BytesIO())
frames = [[jpeg(s) for s in streets], [jpeg(s) for s in flipped]]
period = int(sys.argv[3])
with open(sys.argv[1], "wb") as out:
    for n in range(int(sys.argv[2]) + 10):
        out.write(frames[(n // period) % 2][n % 4])
EOF

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mqtt_port" >"$work/mosquitto.conf"
"$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
hook_port=$(free_port)
"$py" - "$hook_port" >"$work/hook.log" 2>&1 <<'EOF' &
import http.server, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.end_headers()
        print(self.headers.get("X-DLA-Signature-256"), flush=True)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
EOF
pids+=($!)
sleep 1
echo "webhook signing key" >"$work/secret"
echo "viewer:a long passphrase" >"$work/login"

rules='[[rules]]
name = "road below"
class = "road"
region = [0.0, 0.6, 1.0, 1.0]
above = 0.2'
common="[model]
[backend]
threads = $threads
[source]
uri = \"$work/clip.mjpeg\"
$rules"
cat >"$work/plain.toml" <<EOF
$common
[viewer]
listen = "127.0.0.1:0"
EOF
cat >"$work/events.toml" <<EOF
$common
[viewer]
listen = "127.0.0.1:0"
login_file = "$work/login"
[mqtt]
url = "mqtt://127.0.0.1:$mqtt_port"
device = "bench"
discovery = true
coverage_every = "1s"
snapshot = true
[[webhooks]]
url = "http://127.0.0.1:$hook_port/hook"
secret_file = "$work/secret"
EOF

run() {  # config -> "fps events"
  "$bin/dla-edge" run --config "$1" --max-frames "$frames" --json >"$work/run.jsonl" 2>"$work/run.err"
  local fps share events
  fps=$(sed -n 's/.*whole run \([0-9.]*\) fps.*/\1/p' "$work/run.err" | tail -n1)
  share=$(sed -n 's/.*(end to end \([0-9.]*\) % of it).*/\1/p' "$work/run.err" | tail -n1)
  events=$(grep -c '"event"' "$work/run.jsonl" || true)
  echo "$fps $share $events"
}

plain=() with=() plain_share=() with_share=()
for r in $(seq "$rounds"); do
  read -r f p e < <(run "$work/plain.toml"); plain+=("$f"); plain_share+=("$p")
  echo "round $r: plain  $f fps, $p % of inference alone ($e rule events)"
  read -r f p e < <(run "$work/events.toml"); with+=("$f"); with_share+=("$p")
  echo "round $r: events $f fps, $p % of inference alone ($e rule events; MQTT + webhook + login)"
done
hooks=$(grep -c sha256= "$work/hook.log" || true)
echo "webhook deliveries received (signed): $hooks"
"$py" - "${plain[*]}" "${with[*]}" "${plain_share[*]}" "${with_share[*]}" <<'EOF'
import statistics, sys
plain, withe, ps, ws = ([float(v) for v in a.split()] for a in sys.argv[1:5])
p, w = statistics.median(plain), statistics.median(withe)
paired = statistics.median(b / a for a, b in zip(plain, withe))
print(f"median whole-run FPS: plain {p:.2f}, with events {w:.2f} -> {100 * w / p:.1f} %")
print(f"median of the rounds' ratios (each pair back to back): {100 * paired:.1f} % (target >= 97 %)")
print(f"end to end share of inference alone, in-run medians: plain {statistics.median(ps):.1f} %, "
      f"with events {statistics.median(ws):.1f} %")
EOF
