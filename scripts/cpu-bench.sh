#!/usr/bin/env bash
# How dla-edge's CPU inference stands on this machine, in one table: the
# shipped DLA-tiny, or your model (--model, --int8), fp32 and int8, against
# ONNX Runtime on the same input
# (fp32 against its fp32, int8 against its int8 of the same network, a QDQ
# model from `dla-tools quantize --target ort`), and our int8 against our
# fp32, at each thread count. On x86 it repeats the rows as on each older
# CPU this one can pose as (avxvnni: an N100-class box; avx2: Zen 1-3,
# Skylake): where Linux offers CPUID faulting (`cpuid_fault`), both engines
# are shown the older CPU (scripts/cpuid-mask.c, built here with cc), else
# only our kernels are held to it (DLA_ISA). The clock and caches stay this
# machine's. Every pair is one
# `dla-tools bench --vs` run: both engines in one process, interleaved, so a
# noisy neighbour hits both; quote the ratios, and the CPU line with them.
#
# usage: scripts/cpu-bench.sh [--model FP32.onnx [--int8 INT8.onnx]] [--tools BIN]
#                             [--ort-lib LIB] [--threads "1 2"] [--runs N] [--rounds N]
#                             [--out DIR]
# --model    fp32 ONNX model (default models/dla-tiny-seg.onnx)
# --int8     our int8 of it, from `dla-tools quantize` (default: the shipped
#            one with the shipped model; else the script quantizes --model as
#            the shipped one was made: synthetic street scenes, 7-bit weights
#            (AVX2's fast kernel); pass yours for your data)
# --tools    dla-tools binary (default target/release/dla-tools)
# --ort-lib  libonnxruntime or its folder (default $ORT_DYLIB_PATH, else .ci/run's .venv)
# --threads  thread counts to measure (default "1 2")
# --runs     timed runs per engine and pair (default 30)
# --rounds   measure every pair this many times, one round after another,
#            and print each pair's median round (the lower middle one of
#            an even count) with the range of its ratio over all rounds
#            (default 1): on a shared machine one run can swing 5 %
# --out      where the QDQ model, each run's JSON and the table go
#            (default cpu-bench-out/)
# Build first: cargo build --release -p dla-tools
set -euo pipefail
# Paths given are relative to where the script is run from; it then works
# from the repository root.
start=$PWD
abs() { case "$1" in /*) echo "$1" ;; *) echo "$start/$1" ;; esac; }
cd "$(dirname "$0")/.."

fp32=models/dla-tiny-seg.onnx
int8=
tools=target/release/dla-tools
ort_lib="${ORT_DYLIB_PATH:-}"
threads="1 2"
runs=30
rounds=1
out=cpu-bench-out
while [ $# -gt 0 ]; do
    case "$1" in
        --model) fp32=$(abs "$2"); shift 2 ;;
        --int8) int8=$(abs "$2"); shift 2 ;;
        --tools) tools=$(abs "$2"); shift 2 ;;
        --ort-lib) ort_lib=$(abs "$2"); shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --out) out=$(abs "$2"); shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "cpu-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ -f "$fp32" ] || { echo "cpu-bench: no model $fp32" >&2; exit 1; }
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "cpu-bench: --rounds must be a whole number of 1 or more, not '$rounds'" >&2; exit 2; }
[ -z "$int8" ] || [ -f "$int8" ] || { echo "cpu-bench: no int8 model $int8" >&2; exit 1; }
[ -x "$tools" ] || { echo "cpu-bench: no $tools (cargo build --release -p dla-tools)" >&2; exit 1; }
if [ -z "$ort_lib" ]; then
    ort_lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | tail -1 || true)
fi
if [ -d "$ort_lib" ]; then
    ort_lib=$(ls "$ort_lib"/libonnxruntime.so.* 2>/dev/null | tail -1 || true)
fi
[ -f "$ort_lib" ] || { echo "cpu-bench: no libonnxruntime (--ort-lib FILE or DIR, or .ci/run's .venv)" >&2; exit 1; }
export ORT_DYLIB_PATH=$ort_lib
mkdir -p "$out"

name=$(basename "$fp32" .onnx)
# Our int8: the shipped one for the shipped model, else quantized here.
if [ -z "$int8" ] && [ "$(realpath "$fp32")" = "$(realpath models/dla-tiny-seg.onnx)" ]; then
    int8=models/dla-tiny-seg-int8.onnx
elif [ -z "$int8" ]; then
    int8=$out/$name-int8.onnx
    if [ ! -f "$int8" ] || [ "$fp32" -nt "$int8" ]; then
        echo "cpu-bench: quantizing $fp32 for dla-edge into $int8 (as the shipped model; --int8 for yours)" >&2
        "$tools" quantize "$fp32" "$int8" --calib synth:32 --weight-bits 7 >&2
    fi
fi
# ONNX Runtime's int8 of the same network: QDQ, calibrated on the same
# synthetic scenes as the shipped int8 model.
qdq=$out/$name-qdq.onnx
if [ ! -f "$qdq" ] || [ "$fp32" -nt "$qdq" ]; then
    echo "cpu-bench: quantizing $fp32 for ONNX Runtime (QDQ) into $qdq" >&2
    "$tools" quantize "$fp32" "$qdq" --calib synth:32 --target ort >&2
fi

# The older CPUs to pose as, newest first: "native" is everything this CPU
# has.
flags=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo || true)
has() { [[ " $flags " == *" $1 "* ]]; }
caps=native
if has avx512_vnni || has avx_vnni; then
    has avx_vnni && has avx512_vnni && caps="$caps avxvnni"
    has avx2 && caps="$caps avx2"
fi
# Both engines shown the older CPU where the kernel can trap `cpuid`.
mask_lib=
if [ "$caps" != native ] && has cpuid_fault && command -v cc > /dev/null; then
    mask_lib=$out/cpuid-mask.so
    cc -O2 -shared -fPIC -o "$mask_lib" scripts/cpuid-mask.c || mask_lib=
fi

# Runs dla-tools as on the CPU named by $1.
tools_as() {
    local isa=$1; shift
    if [ "$isa" != native ] && [ -n "$mask_lib" ]; then
        CPUID_MASK=$isa LD_PRELOAD=$mask_lib \
            GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD \
            "$tools" "$@"
    else
        DLA_ISA=$isa "$tools" "$@"
    fi
}
# One `bench --vs` pair into $out/NAME.json (round 1) or NAME.rN.json
# (round N), as on the CPU named by $2.
round=1
pair() {
    local name=$1 isa=$2; shift 2
    local file=$name.json
    [ "$round" = 1 ] || file=$name.r$round.json
    echo "cpu-bench: $name$([ "$round" = 1 ] || echo " (round $round)")" >&2
    tools_as "$isa" bench --runs "$runs" --json "$@" > "$out/$file"
}
# Whole rounds one after another, so a noisy minute hits one round of
# every pair rather than every round of one.
for round in $(seq "$rounds"); do
    for isa in $caps; do
        for t in $threads; do
            if [ "$isa" = native ] || [ -n "$mask_lib" ]; then
                pair "fp32-vs-ort-t$t-$isa" "$isa" -m "$fp32" --vs ort -t "$t"
            fi
            pair "int8-vs-ort-t$t-$isa" "$isa" -m "$int8" --vs ort --vs-model "$qdq" -t "$t"
            pair "fp32-vs-int8-t$t-$isa" "$isa" -m "$fp32" --vs tract --vs-model "$int8" -t "$t"
        done
    done
done
for isa in $caps; do
    tools_as "$isa" inspect "$int8" --kernels > "$out/kernels-$isa.txt"
done

cpu=$(grep -m1 -E '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
[ -n "$cpu" ] || cpu=$(uname -m)
shown=$(for f in avx2 fma avx_vnni avx512f avx512_vnni amx_int8 asimd asimddp i8mm; do
    if has "$f"; then printf '%s ' "$f"; fi; done)
# Which build ran: this checkout's, or the one --tools named.
build="dla-edge $(git describe --always --dirty 2>/dev/null || echo '?')"
[ "$tools" = target/release/dla-tools ] || build="$tools (scripts at ${build#dla-edge })"
python3 - "$out" "$threads" "$caps" "$cpu" "$shown" "$(nproc)" "$name" "$build" "$mask_lib" "$rounds" <<'EOF' | tee "$out/table.md"
import json, sys
out, threads, caps, cpu, flags, cores, name, commit, masked, rounds = sys.argv[1:]
threads, caps, rounds = threads.split(), caps.split(), int(rounds)
def load(file):
    with open(f"{out}/{file}") as f:
        return json.load(f)
def run(name):
    """The pair's round with the median ratio, with the range of all rounds."""
    runs = [load(f"{name}.json")] + [load(f"{name}.r{r}.json") for r in range(2, rounds + 1)]
    ranked = sorted(runs, key=lambda r: r["ratio"])
    median = dict(ranked[(len(ranked) - 1) // 2])
    median["range"] = (ranked[0]["ratio"], ranked[-1]["ratio"])
    return median
print(f"CPU: {cpu}, {cores} cores available; flags: {flags.strip()}")
h, w = run(f"fp32-vs-ort-t{threads[0]}-native")["input"]
how = "medians of interleaved runs"
if rounds > 1:
    how += f"; each cell the median of {rounds} rounds, with the range of all"
print(f"{commit}; {name} at {w}x{h}, network time, {how}")
print()
print("| measured | " + " | ".join(f"{t} thread(s)" for t in threads) + " |")
print("|---|" + "---:|" * len(threads))
def row(label, cells):
    print(f"| {label} | " + " | ".join(cells) + " |")
def vs(r):
    cell = f"**{r['ratio']:.2f}x** ({r['ours']['median_ms']:.1f} / {r['theirs']['median_ms']:.1f} ms"
    if rounds > 1:
        cell += f"; {r['range'][0]:.2f}–{r['range'][1]:.2f}x"
    return cell + ")"
for isa in caps:
    if isa == "native":
        held = ""
    elif masked:
        held = {"avxvnni": " (both as on AVX-VNNI, N100-class)", "avx2": " (both as on AVX2 only)"}[isa]
    else:
        held = f" (ours held to {isa})"
    if isa == "native" or masked:
        row(f"ours fp32 / ORT fp32{held}", [vs(run(f"fp32-vs-ort-t{t}-{isa}")) for t in threads])
    row(f"ours int8 / ORT int8{held}", [vs(run(f"int8-vs-ort-t{t}-{isa}")) for t in threads])
    row(f"int8 speed-up over fp32{held}", [vs(run(f"fp32-vs-int8-t{t}-{isa}")) for t in threads])
agree = load(f"int8-vs-ort-t{threads[0]}-native.json")["argmax_agreement"]
if len(caps) > 1 and masked:
    print()
    print("'As on' rows hide the newer instructions from `cpuid` for both engines (scripts/cpuid-mask.c).")
elif len(caps) > 1:
    print()
    print("Held rows cap our kernels (DLA_ISA), fp32 included; ONNX Runtime always uses all of this CPU.")
print()
print(f"int8 argmax agreement with ONNX Runtime's QDQ model: {100 * agree:.4f} %")
for isa in caps:
    kernels = [l for l in open(f"{out}/kernels-{isa}.txt") if l.startswith("kernels") or "convolution(s) on" in l]
    print("".join(kernels).rstrip())
EOF
