#!/usr/bin/env bash
# Checks dla-edge's GPU path (issue 7) on a machine with an NVIDIA GPU and a GPU
# build of ONNX Runtime: runs the CUDA and TensorRT providers for real, compares
# their outputs with the CPU provider's and with tract, and measures FPS.
#
#   scripts/gpu-check.sh --ort-lib DIR/libonnxruntime.so.X [--tools BIN] [--out DIR]
#
# --ort-lib  libonnxruntime from a GPU build (PyPI onnxruntime-gpu:
#            site-packages/onnxruntime/capi/; JetPack: the Jetson Zoo wheel).
#            Its providers_cuda/_tensorrt libraries must sit beside it.
# --tools    a dla-tools binary (default: target/release/dla-tools, else debug).
# --out      where the JSON results and logs go (default: gpu-check-out/).
#
# CUDA, cuBLAS and cuDNN are found on LD_LIBRARY_PATH; the script adds the lib
# folders of Python's `nvidia-*` wheels (PyTorch's CUDA runtime) when present.
# Every step runs even if one before it failed; the summary at the end says
# which passed. Exit status: 0 when the CUDA provider ran and agreed with the CPU.
set -u
cd "$(dirname "$0")/.."

ort_lib="${ORT_DYLIB_PATH:-}"
tools=""
out="gpu-check-out"
while [ $# -gt 0 ]; do
    case "$1" in
        --ort-lib) ort_lib="$2"; shift 2 ;;
        --tools) tools="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$ort_lib" ]; then
    echo "gpu-check: give --ort-lib PATH (a GPU build of libonnxruntime) or set ORT_DYLIB_PATH" >&2
    exit 2
fi
if [ -z "$tools" ]; then
    for t in target/release/dla-tools target/debug/dla-tools; do
        [ -x "$t" ] && { tools="$t"; break; }
    done
fi
[ -x "$tools" ] || { echo "gpu-check: no dla-tools binary; build one or pass --tools" >&2; exit 2; }
mkdir -p "$out"

# CUDA libraries that pip wheels (PyTorch's) put under site-packages/nvidia.
for py in python3 /opt/torch/.venv/bin/python3; do
    dirs=$("$py" - 2>/dev/null <<'EOF'
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
seen = []
for root in nvidia.__path__:
    for lib in glob.glob(os.path.join(root, "**", "lib"), recursive=True):
        if glob.glob(os.path.join(lib, "lib*.so*")) and lib not in seen:
            seen.append(lib)
print(":".join(seen))
EOF
)
    [ -n "$dirs" ] && { export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; }
done

threads=$(nproc)
# Show ONNX Runtime's node placement summary (which provider runs which nodes).
export RUST_LOG="${RUST_LOG:-warn,dla_runtime=info}"
fp32=models/dla-tiny-seg.onnx
int8_tract=models/dla-tiny-seg-int8.onnx
qdq="$out/int8-qdq-ort.onnx"
qdq_trt="$out/int8-qdq-tensorrt.onnx"
declare -a summary

step() {
    local name="$1"; shift
    echo "=== $name: $*"
    if "$@" >"$out/$name.out" 2>"$out/$name.err"; then
        summary+=("ok    $name"); tail -n 12 "$out/$name.out"
    else
        summary+=("FAIL  $name (exit $?)"); tail -n 12 "$out/$name.out"; tail -n 5 "$out/$name.err"
    fi
}
# A step that must fail loudly: passes when the command exits non-zero and its
# error says PATTERN (so a typo in the command line cannot pass for it).
must_fail() {
    local name="$1" pattern="$2"; shift 2
    echo "=== $name (must fail with /$pattern/): $*"
    if "$@" >"$out/$name.out" 2>"$out/$name.err"; then
        summary+=("FAIL  $name (it succeeded)")
    elif grep -q -- "$pattern" "$out/$name.err"; then
        summary+=("ok    $name (refused as it should)")
    else
        summary+=("FAIL  $name (failed, but not with /$pattern/)")
    fi
    tail -n 3 "$out/$name.err"
}

# A step's JSON must say KEY is VALUE, e.g. that the GPU took the argmax and
# its labels passed the first frame's check against ours.
expect() {
    local name="$1" key="$2" value="$3"
    if grep -q "\"$key\":\"$value\"" "$out/$name.out"; then
        summary+=("ok    $name: $key = $value")
    else
        summary+=("FAIL  $name: $key is not $value")
    fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
"$tools" --version

lib=(--ort-lib "$ort_lib")
step cuda-vs-tract "$tools" bench --model $fp32 --backend ort-cuda "${lib[@]}" --vs tract \
    --threads "$threads" --runs 50 --json
step cuda-vs-cpu "$tools" bench --model $fp32 --backend ort-cuda "${lib[@]}" --vs ort-cpu \
    --threads "$threads" --runs 50 --json
# The whole frame with the argmax on the GPU (the default there: only class IDs
# are copied back) and, beside it, with the logits copied back for our argmax.
step cuda-frame "$tools" bench --model $fp32 --backend ort-cuda "${lib[@]}" --runs 200 --json
expect cuda-frame argmax engine
step cuda-frame-host-argmax "$tools" bench --model $fp32 --backend ort-cuda "${lib[@]}" --runs 200 \
    --json --argmax host
# A 720p camera frame: engine (argmax and bilinear upsampling on the GPU) vs
# host (logits copied back, upsampled here).
step cuda-720p "$tools" bench --model $fp32 --backend ort-cuda "${lib[@]}" --runs 200 --json \
    --frame 1280x720 --argmax engine
expect cuda-720p argmax engine
step cuda-720p-host-argmax "$tools" bench --model $fp32 --backend ort-cuda "${lib[@]}" --runs 200 \
    --json --frame 1280x720 --argmax host
# Labels from the GPU's argmax score as the CPU provider's (eval without --vs
# takes the labels-only path; the two mIoUs should match to the last digit).
step cuda-engine-argmax-miou "$tools" eval --model $fp32 --backend ort-cuda "${lib[@]}" --data synth:16:2 --json
step cpu-miou "$tools" eval --model $fp32 --backend ort-cpu "${lib[@]}" --data synth:16:2 --json
step cuda-agrees-cpu "$tools" eval --model $fp32 --backend ort-cuda "${lib[@]}" --vs $fp32 \
    --vs-backend ort-cpu --data synth:16:2 --json
step cuda-agrees-tract "$tools" eval --model $fp32 --backend ort-cuda "${lib[@]}" --vs $fp32 \
    --vs-backend tract --data synth:16:2 --json
step quantize-qdq-ort "$tools" quantize $fp32 "$qdq" --target ort --calib synth:16 --eval none
step quantize-qdq-trt "$tools" quantize $fp32 "$qdq_trt" --target tensorrt --calib synth:16 --eval none
for m in "$qdq" "$qdq_trt"; do
    n=$(basename "$m" .onnx)
    step "$n-cuda-agrees-cpu" "$tools" eval --model "$m" --backend ort-cuda "${lib[@]}" --vs $fp32 \
        --vs-backend ort-cpu --data synth:16:2 --json --allow-cpu-fallback
    step "$n-cuda-frame" "$tools" bench --model "$m" --backend ort-cuda "${lib[@]}" --runs 200 \
        --json --allow-cpu-fallback
done
# The tract form's QLinearConv has no CUDA kernel: refused, not quietly on the CPU.
must_fail cuda-refuses-tract-int8 "no kernel on this GPU provider" "$tools" bench --model $int8_tract --backend ort-cuda "${lib[@]}" --runs 3
step cuda-tract-int8-fallback "$tools" bench --model $int8_tract --backend ort-cuda "${lib[@]}" \
    --allow-cpu-fallback --runs 10 --json
# TensorRT: runs when its libraries (libnvinfer) are on LD_LIBRARY_PATH, else the loud error.
have_trt=""
ldconfig -p 2>/dev/null | grep -q libnvinfer && have_trt=1
IFS=: read -ra lib_dirs <<<"${LD_LIBRARY_PATH:-}"
for d in "${lib_dirs[@]}"; do compgen -G "$d/libnvinfer.so*" >/dev/null && have_trt=1; done
if [ -n "$have_trt" ]; then
    step tensorrt-frame "$tools" bench --model $fp32 --backend ort-tensorrt "${lib[@]}" --runs 200 --json
    expect tensorrt-frame argmax engine
    step tensorrt-agrees-cpu "$tools" eval --model $fp32 --backend ort-tensorrt "${lib[@]}" --vs $fp32 \
        --vs-backend ort-cpu --data synth:16:2 --json
    # Unverified so far: TensorRT with the frame-size Resize (auto leaves it out).
    step tensorrt-720p-engine-argmax "$tools" bench --model $fp32 --backend ort-tensorrt "${lib[@]}" \
        --runs 100 --json --frame 1280x720 --argmax engine
    expect tensorrt-720p-engine-argmax argmax engine
    step tensorrt-720p "$tools" bench --model $fp32 --backend ort-tensorrt "${lib[@]}" \
        --runs 100 --json --frame 1280x720
else
    echo "(no libnvinfer: TensorRT is not installed here)"
    must_fail tensorrt-without-libnvinfer "libnvinfer" "$tools" bench --model $fp32 --backend ort-tensorrt "${lib[@]}" --runs 3
    step tensorrt-fallback "$tools" bench --model $fp32 --backend ort-tensorrt "${lib[@]}" \
        --allow-cpu-fallback --runs 5 --json
fi

echo "=== node placement (ONNX Runtime, RUST_LOG=info)"
grep -h "placed on" "$out"/*.err | sort | uniq -c | head -40
echo "=== the GPU's own argmax against ours (first frame of each kind)"
grep -h "own argmax" "$out"/*.err | sort | uniq -c
echo "=== summary"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
grep -q "^ok    cuda-agrees-cpu" "$out/summary.txt"
