#!/usr/bin/env python3
"""Judge quantised models with ONNX Runtime, independently of dla-edge.

Runs an fp32 model and one or more quantised models in onnxruntime on the same
labelled images (the `dla-tools synth` layout, at the model's input size) and
prints one JSON object: for each quantised model its argmax agreement with
fp32 and its mIoU (over classes present in the labels, as dla-tools eval).

With --baseline OUT --calib DIR it first writes ONNX Runtime's own
`quantize_static` result (QDQ, per-channel, MinMax, like its defaults) for the
same fp32 model and calibration images, and judges it beside the others: the
reference the dla-tools quantiser is measured against.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image


def card_of(sess):
    return json.loads(sess.get_modelmeta().custom_metadata_map["dla_edge.model_card"])


def tensor(path, spec):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    if rgb.shape[:2] != (spec["height"], spec["width"]):
        sys.exit(f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, model input is "
                 f"{spec['width']}x{spec['height']}")
    if spec.get("color", "RGB") == "BGR":
        rgb = rgb[:, :, ::-1]
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = (rgb / np.float32(spec.get("scale", 255.0)) - mean) / std
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def miou(conf):
    tp = np.diag(conf).astype(np.float64)
    gt = conf.sum(1).astype(np.float64)
    union = gt + conf.sum(0) - tp
    present = gt > 0
    return float((tp[present] / union[present]).mean())


def baseline(fp32, calib_dir, spec, out):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            files = sorted((calib_dir / "images").glob("*.png"))
            self.items = iter([{"image": tensor(f, spec)} for f in files])

        def get_next(self):
            return next(self.items, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    pre.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fp32", required=True, type=pathlib.Path)
    ap.add_argument("--model", action="append", default=[], type=pathlib.Path,
                    help="quantised model to judge (repeatable)")
    ap.add_argument("--data", required=True, type=pathlib.Path,
                    help="held-out images/ + labels/ at the input size")
    ap.add_argument("--calib", type=pathlib.Path, help="calibration images/ for --baseline")
    ap.add_argument("--baseline", type=pathlib.Path, help="write ORT quantize_static output here")
    args = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    ref = ort.InferenceSession(str(args.fp32), opts, providers=["CPUExecutionProvider"])
    spec = card_of(ref)["input"]
    classes = len(card_of(ref)["classes"])
    models = list(args.model)
    if args.baseline:
        if not args.calib:
            sys.exit("--baseline needs --calib")
        baseline(args.fp32, args.calib, spec, args.baseline)
        models.append(args.baseline)
    sessions = [ort.InferenceSession(str(m), opts, providers=["CPUExecutionProvider"])
                for m in models]
    name = ref.get_inputs()[0].name
    conf_ref = np.zeros((classes, classes), np.int64)
    conf = [np.zeros((classes, classes), np.int64) for _ in models]
    same = [0 for _ in models]
    pixels = 0
    files = sorted((args.data / "images").glob("*.png"))
    if not files:
        sys.exit(f"{args.data}/images: no PNG images")
    for f in files:
        x = tensor(f, spec)
        truth = np.asarray(Image.open(args.data / "labels" / f.name)).reshape(-1).astype(np.int64)
        valid = truth < classes
        r = ref.run(None, {name: x})[0].argmax(1).reshape(-1)
        conf_ref += np.bincount(truth[valid] * classes + r[valid],
                                minlength=classes * classes).reshape(classes, classes)
        pixels += r.size
        for i, s in enumerate(sessions):
            q = s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1).reshape(-1)
            same[i] += int((q == r).sum())
            conf[i] += np.bincount(truth[valid] * classes + q[valid],
                                   minlength=classes * classes).reshape(classes, classes)
    print(json.dumps({
        "ort_version": ort.__version__,
        "images": len(files),
        "miou_fp32": miou(conf_ref),
        "models": {str(m): {"argmax_agreement": same[i] / pixels, "miou": miou(conf[i]),
                            "miou_drop_points": (miou(conf_ref) - miou(conf[i])) * 100}
                   for i, m in enumerate(models)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
