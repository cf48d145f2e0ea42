#!/usr/bin/env python3
"""Export a DLASeg checkpoint to ONNX for the Rust runtime.

Loads our ``checkpoint.pt`` (from ``train.py``) or a ucbdrive/dla DLASeg
checkpoint (``"module."`` prefixes and a ``"state_dict"`` wrapper are handled,
the backbone's ImageNet ``base.fc`` is dropped), folds every BatchNorm into its
conv, and exports opset 17 with static shapes:

* input  ``image``  float32 1x3xHxW (RGB, ImageNet-normalised),
* output ``logits`` float32 1xCxHxW (raw class scores at input resolution).

The graph uses only Conv, Relu, MaxPool, Concat, Add and ConvTranspose. The
model card (JSON) is stored in the ONNX ``metadata_props`` under
``dla_edge.model_card`` (plus readable flat keys) and written next to the
model as ``<out>.card.json``. The export is then checked with onnxruntime
against PyTorch (max abs diff must be < ``--tol``).

Examples::

    # our training run
    python models/export.py --checkpoint runs/dla-tiny/checkpoint.pt \\
        --metrics runs/dla-tiny/metrics.json --out dla-tiny-seg.onnx
    # untrained model (tests)
    python models/export.py --random-init --seed 1 --out /tmp/dla-random.onnx
    # ucbdrive/dla Cityscapes DLA-34 (down_ratio 2) at 512x1024
    python models/export.py --checkpoint dla34up_cityscapes.pth --arch dla34 \\
        --down-ratio 2 --height 512 --width 1024 --name dla34-up-cityscapes --out dla34up.onnx
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import warnings
from typing import Dict, Optional

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cityscapes import IGNORE_INDEX, MEAN, STD, class_table  # noqa: E402
from dla import (BACKBONES, DLASeg, calibrate_bn, check_input_size, count_macs,  # noqa: E402
                 count_params, fold_batchnorm, load_reference_state_dict)

OPSET = 17
ALLOWED_OPS = {"Conv", "Relu", "MaxPool", "Concat", "Add", "ConvTranspose"}
CARD_KEY = "dla_edge.model_card"


def export_onnx(model: torch.nn.Module, x: torch.Tensor, path: str) -> str:
    """Export with the TorchScript exporter (``dynamo=False``) when available,
    else with the dynamo exporter; returns which one was used."""
    kwargs = dict(input_names=["image"], output_names=["logits"], opset_version=OPSET,
                  do_constant_folding=True, export_params=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notice of the TorchScript exporter
            torch.onnx.export(model, (x,), path, dynamo=False, **kwargs)
        return "torchscript (dynamo=False)"
    except TypeError:  # a torch without the TorchScript exporter
        torch.onnx.export(model, (x,), path, dynamo=True, external_data=False, optimize=True, **kwargs)
        return "dynamo"


def strip_identity(model: onnx.ModelProto) -> int:
    """Remove Identity nodes by rewiring their consumers to the Identity's input.

    The TorchScript exporter de-duplicates equal initializers (e.g. the
    untouched bilinear up-sampling kernels) through Identity nodes; the runtime
    graph should not carry them. Returns the number removed.
    """
    graph_outputs = {o.name for o in model.graph.output}
    alias = {}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.output[0] not in graph_outputs:
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(alias)


def op_histogram(model: onnx.ModelProto) -> Dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def check_graph(model: onnx.ModelProto, classes: int, h: int, w: int) -> None:
    """Static shapes, standard opset 17, only the expected ops."""
    onnx.checker.check_model(model)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != OPSET or set(opsets) != {"ai.onnx"}:
        raise SystemExit(f"unexpected opset imports {opsets}; want ai.onnx {OPSET} only")
    bad = {op for op in op_histogram(model) if op not in ALLOWED_OPS}
    if bad:
        raise SystemExit(f"graph has unexpected ops {sorted(bad)}; allowed: {sorted(ALLOWED_OPS)}")

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in vi.type.tensor_type.shape.dim]

    (inp,), (out,) = model.graph.input, model.graph.output
    if (inp.name, dims(inp), inp.type.tensor_type.elem_type) != ("image", [1, 3, h, w], onnx.TensorProto.FLOAT):
        raise SystemExit(f"unexpected input {inp.name} {dims(inp)}")
    if (out.name, dims(out), out.type.tensor_type.elem_type) != ("logits", [1, classes, h, w], onnx.TensorProto.FLOAT):
        raise SystemExit(f"unexpected output {out.name} {dims(out)}")


def build_card(a: argparse.Namespace, metrics: Optional[Dict], params: int, gmac: float,
               loaded_from: str) -> Dict:
    table = class_table(a.classes)
    training: Dict = {"source": loaded_from}
    card_metrics: Dict = {"heldout_miou": None, "per_class_iou": {}, "pixel_acc": None}
    if metrics:
        ds = metrics.get("dataset", {})
        training.update({
            "dataset": ds,
            "seed": metrics.get("seed"),
            "steps": metrics.get("steps"),
            "images_seen": metrics.get("images_seen"),
            "minutes": metrics.get("minutes"),
            "command": metrics.get("command"),
            "torch_version": metrics.get("torch_version"),
        })
        card_metrics = {
            "heldout_miou": metrics.get("miou"),
            "per_class_iou": metrics.get("per_class_iou", {}),
            "pixel_acc": metrics.get("pixel_acc"),
        }
    elif a.random_init:
        training.update({"random_init": True, "seed": a.seed})
    return {
        "schema": 1,
        "name": a.name,
        "architecture": "DLASeg",
        "backbone": a.arch,
        "down_ratio": a.down_ratio,
        "input": {"name": "image", "height": a.height, "width": a.width, "color": "RGB",
                  "layout": "NCHW", "scale": 255.0, "mean": list(a.mean), "std": list(a.std)},
        "output": {"name": "logits", "kind": "logits", "resolution": "input"},
        "classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(table)],
        "ignore_index": IGNORE_INDEX,
        "training": training,
        "metrics": card_metrics,
        "params": params,
        "gmac": round(gmac, 4),
        "export": {"opset": OPSET, "torch_version": torch.__version__, "onnx_version": onnx.__version__,
                   "batchnorm_folded": True},
    }


def provenance_line(card: Dict) -> str:
    t = card["training"]
    if t.get("random_init"):
        return f"untrained (random init, seed {t.get('seed')})"
    if "steps" not in t:
        return f"weights from {t['source']}"
    ds = t.get("dataset") or {}
    miou = card["metrics"]["heldout_miou"]
    return (f"{t.get('steps')} steps / {t.get('minutes')} min, seed {t.get('seed')}, "
            f"{ds.get('train_count', '?')} train / {ds.get('val_count', '?')} val images, "
            f"held-out mIoU {miou}, torch {t.get('torch_version')}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="state_dict .pt/.pth (ours or ucbdrive/dla DLASeg)")
    src.add_argument("--random-init", action="store_true",
                     help="export an untrained model (BN statistics calibrated on noise; for tests)")
    p.add_argument("--arch", default="dla46_c", choices=BACKBONES, help="DLA backbone (default dla46_c)")
    p.add_argument("--down-ratio", type=int, default=4, choices=(2, 4, 8))
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--height", type=int, default=256, help="input height, multiple of 32")
    p.add_argument("--width", type=int, default=512, help="input width, multiple of 32")
    p.add_argument("--metrics", help="metrics.json of the training run (provenance for the model card)")
    p.add_argument("--mean", type=float, nargs=3, default=MEAN, metavar=("R", "G", "B"),
                   help="normalisation mean recorded in the card (default ImageNet)")
    p.add_argument("--std", type=float, nargs=3, default=STD, metavar=("R", "G", "B"),
                   help="normalisation std recorded in the card (default ImageNet)")
    p.add_argument("--name", default="dla-tiny-seg", help="model name in the card")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init and the check input")
    p.add_argument("--tol", type=float, default=1e-3, help="max abs diff allowed between onnxruntime and torch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="output .onnx path")
    a = p.parse_args()

    try:
        check_input_size(a.height, a.width)
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    model = DLASeg(a.arch, a.classes, a.down_ratio)
    if a.checkpoint:
        info = load_reference_state_dict(model, torch.load(a.checkpoint, map_location="cpu", weights_only=True))
        if info["ignored"]:
            print(f"ignored checkpoint keys: {', '.join(info['ignored'])}")
        loaded_from = os.path.basename(a.checkpoint)
        model.eval()
    else:
        calibrate_bn(model, seed=a.seed)
        loaded_from = "random-init"
    params = count_params(model)
    gmac = count_macs(model, (1, 3, a.height, a.width))["total"] / 1e9
    metrics = None
    if a.metrics:
        with open(a.metrics, encoding="utf-8") as f:
            metrics = json.load(f)
        for key, want in (("arch", a.arch), ("down_ratio", a.down_ratio), ("classes", a.classes)):
            if key in metrics and metrics[key] != want:
                p.error(f"--metrics says {key}={metrics[key]!r} but --{key.replace('_', '-')} is {want!r}")

    folded = fold_batchnorm(model)
    x = torch.randn(1, 3, a.height, a.width, generator=torch.Generator().manual_seed(a.seed))
    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    exporter = export_onnx(folded, x, a.out)

    onnx_model = onnx.load(a.out)
    removed = strip_identity(onnx_model)
    check_graph(onnx_model, a.classes, a.height, a.width)
    card = build_card(a, metrics, params, gmac, loaded_from)
    table = class_table(a.classes)
    flat = {
        CARD_KEY: json.dumps(card, separators=(",", ":")),
        "classes": ",".join(n for n, _ in table),
        "palette": ";".join(",".join(str(v) for v in c) for _, c in table),
        "mean": ",".join(str(v) for v in a.mean),
        "std": ",".join(str(v) for v in a.std),
        "input_size": f"1x3x{a.height}x{a.width}",
        "output_stride": str(a.down_ratio),
        "architecture": f"DLASeg({a.arch}, down_ratio={a.down_ratio}, classes={a.classes})",
        "training": provenance_line(card),
    }
    del onnx_model.metadata_props[:]
    for k, v in flat.items():
        onnx_model.metadata_props.add(key=k, value=v)
    onnx_model.producer_name = "dla-edge models/export.py"
    onnx_model.doc_string = f"{a.name}: {flat['architecture']}"
    onnx.save(onnx_model, a.out)
    with open(a.out + ".card.json", "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2)
        f.write("\n")

    import onnxruntime as ort  # noqa: E402  (only needed for the check)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(a.out, so, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"image": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()  # the unfolded model
    diff = float(np.abs(got - want).max())

    hist = op_histogram(onnx_model)
    print(f"exporter: {exporter}; opset {OPSET}; {len(onnx_model.graph.node)} nodes "
          f"({removed} Identity removed); "
          f"{os.path.getsize(a.out) / 1e6:.2f} MB")
    print(f"params {params} ({params / 1e6:.3f} M), {gmac:.3f} GMAC at 1x3x{a.height}x{a.width}")
    print("op histogram: " + ", ".join(f"{k} {v}" for k, v in hist.items()))
    print(f"onnxruntime vs torch (unfolded): max abs diff {diff:.3e} (logits max |x| {np.abs(want).max():.3f}, tol {a.tol:g})")
    print(f"wrote {a.out} and {a.out}.card.json")
    if diff >= a.tol:
        print("FAIL: onnxruntime output differs from torch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
