#!/usr/bin/env python3
"""Reference numerics for the golden test: run ONNX Runtime on the same input
dla-edge saw and compare with the logits dla-edge wrote (--save-logits).

The image must already be at the model's input size, so the input tensor is
exactly (x / scale - mean) / std with no resampling on either side.

Prints one JSON object: pixels, argmax_agreement, max_abs_diff, ort_version.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image


def input_spec(sess, model, image_hw):
    """The card's input spec, found as dla-edge finds it; for a card-less model
    dla-edge's stated defaults (RGB, /255, ImageNet mean/std) at the graph's
    size, or the image's for a graph of free size."""
    meta = sess.get_modelmeta().custom_metadata_map
    if "dla_edge.model_card" in meta:
        return json.loads(meta["dla_edge.model_card"])["input"]
    for sidecar in (model + ".card.json", os.path.splitext(model)[0] + ".card.json"):
        if os.path.isfile(sidecar):
            with open(sidecar) as f:
                return json.load(f)["input"]
    _, _, h, w = sess.get_inputs()[0].shape
    return {
        "height": h if isinstance(h, int) else image_hw[0],
        "width": w if isinstance(w, int) else image_hw[1],
        "color": "RGB", "scale": 255.0,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True,
                    help="ONNX model; its card from the metadata, else a sidecar MODEL.card.json, "
                         "else dla-edge's defaults for a card-less model")
    ap.add_argument("--image", required=True, help="RGB image at the model's input size")
    ap.add_argument("--logits", required=True, help="NAME.logits.npy written by dla-edge segment --save-logits")
    args = ap.parse_args()

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    rgb = np.asarray(Image.open(args.image).convert("RGB"), dtype=np.float32)
    spec = input_spec(sess, args.model, rgb.shape[:2])
    if rgb.shape[:2] != (spec["height"], spec["width"]):
        print(f"{args.image}: image is {rgb.shape[1]}x{rgb.shape[0]}, model input is "
              f"{spec['width']}x{spec['height']}", file=sys.stderr)
        return 2
    if spec.get("color", "RGB") == "BGR":
        rgb = rgb[:, :, ::-1]
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = ((rgb / np.float32(spec.get("scale", 255.0)) - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)

    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ours = np.load(args.logits)
    if ours.shape != ref.shape:
        print(f"shape mismatch: ours {ours.shape} vs onnxruntime {ref.shape}", file=sys.stderr)
        return 2
    agree = float((ours.argmax(1) == ref.argmax(1)).mean())
    print(json.dumps({
        "pixels": int(ref.shape[2] * ref.shape[3]),
        "argmax_agreement": agree,
        "max_abs_diff": float(np.abs(ours - ref).max()),
        "ort_version": ort.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
