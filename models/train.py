#!/usr/bin/env python3
"""Train a DLASeg semantic-segmentation model on CPU (or GPU) under a
wall-clock budget, then evaluate it at full resolution.

Dataset layout (as written by ``dla-tools synth``)::

    DIR/images/000000.png   RGB8 image (e.g. 512x256)
    DIR/labels/000000.png   8-bit label image, Cityscapes trainIds 0..18, 255 = ignore
    DIR/dataset.json        JSON with at least {"count": N}

All images are decoded once into memory. Training uses random crops
(``--crop``, default 128x256) of randomly down-scaled images (``--scale-min``
.. ``--scale-max``, nearest-neighbour for labels) with horizontal flips, ImageNet
normalisation, cross-entropy with ignore_index 255, AdamW with linear warm-up
and polynomial (power 0.9) decay. With ``--minutes`` the decay follows the
fraction of the time budget used, so the schedule always completes; use
``--steps`` for a run whose step count (and therefore result) does not depend
on machine speed.

Outputs in ``--out``: ``checkpoint.pt`` (the model state_dict), ``metrics.json``
(held-out mIoU, per-class IoU, pixel accuracy, provenance) and ``train.log``.

Example::

    python models/train.py --data data/synth-train --val data/synth-val \\
        --arch dla46_c --down-ratio 4 --minutes 60 --threads 2 --out runs/dla-tiny
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from typing import Dict, List, Optional, Tuple

# With more threads than idle cores (e.g. next to a compiler), OpenMP's default
# spin-waiting made steps 10-20x slower in our tests; passive waiting avoids it.
# Must be set before torch loads its OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cityscapes import IGNORE_INDEX, MEAN, STD, class_table  # noqa: E402
from dla import BACKBONES, DLASeg, check_input_size, count_params  # noqa: E402


class Logger:
    """Print to stdout and append to a log file."""

    def __init__(self, path: str):
        self.f = open(path, "a", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        print(msg, flush=True)
        self.f.write(msg + "\n")
        self.f.flush()


def load_dataset(root: str, limit: int = 0) -> Tuple[torch.Tensor, torch.Tensor, Dict]:
    """Decode a dataset directory into uint8 tensors (N,3,H,W) and (N,H,W)."""
    meta_path = os.path.join(root, "dataset.json")
    meta: Dict = {}
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    names = sorted(n for n in os.listdir(os.path.join(root, "images")) if n.endswith(".png"))
    if "count" in meta and meta["count"] != len(names):
        print(f"warning: {meta_path} says count={meta['count']} but {len(names)} images found",
              file=sys.stderr)
    if limit:
        names = names[:limit]
    if not names:
        raise SystemExit(f"no images in {root}/images")
    images, labels = [], []
    for n in names:
        img = np.asarray(Image.open(os.path.join(root, "images", n)).convert("RGB"))
        lab_img = Image.open(os.path.join(root, "labels", n))
        if lab_img.mode not in ("L", "P"):
            raise SystemExit(f"{root}/labels/{n}: expected an 8-bit grayscale label, got mode {lab_img.mode}")
        lab = np.asarray(lab_img)
        if lab.shape != img.shape[:2]:
            raise SystemExit(f"{n}: image {img.shape[:2]} and label {lab.shape} sizes differ")
        images.append(torch.from_numpy(img.copy()).permute(2, 0, 1))
        labels.append(torch.from_numpy(lab.copy()))
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) != 1:
        raise SystemExit(f"{root}: images have different sizes {sorted(shapes)}")
    return torch.stack(images), torch.stack(labels), meta


def normalise(x_uint8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x_uint8.float() / 255.0 - mean) / std


def make_batch(images: torch.Tensor, labels: torch.Tensor, idx: List[int], crop: Tuple[int, int],
               scale: Tuple[float, float], gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random scale -> random crop (padding with ignore if needed) -> random flip."""
    ch, cw = crop
    xs, ys = [], []
    for i in idx:
        img = images[i].unsqueeze(0).float()
        lab = labels[i].unsqueeze(0).unsqueeze(0).float()
        s = scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=gen).item()
        if s != 1.0:
            h, w = img.shape[-2:]
            size = (max(1, round(h * s)), max(1, round(w * s)))
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
            lab = F.interpolate(lab, size=size, mode="nearest")
        h, w = img.shape[-2:]
        if h < ch or w < cw:  # pad: image with the mean colour, label with ignore
            ph, pw = max(0, ch - h), max(0, cw - w)
            mean_col = torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0
            img = F.pad(img - mean_col, (0, pw, 0, ph)) + mean_col
            lab = F.pad(lab, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = img.shape[-2:]
        y0 = torch.randint(0, h - ch + 1, (), generator=gen).item()
        x0 = torch.randint(0, w - cw + 1, (), generator=gen).item()
        img = img[..., y0:y0 + ch, x0:x0 + cw]
        lab = lab[..., y0:y0 + ch, x0:x0 + cw]
        if torch.rand((), generator=gen).item() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        xs.append(img)
        ys.append(lab)
    x = torch.cat(xs).clamp_(0, 255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    x = (x / 255.0 - mean) / std
    y = torch.cat(ys)[:, 0].round().long()
    return x, y


@torch.no_grad()
def evaluate(model: DLASeg, images: torch.Tensor, labels: torch.Tensor, classes: int,
             batch: int = 4) -> Dict:
    """Full-resolution evaluation: confusion matrix -> IoU per class, mIoU over
    classes present in the ground truth, pixel accuracy."""
    model.eval()
    conf = torch.zeros(classes, classes, dtype=torch.long)
    for s in range(0, len(images), batch):
        x = normalise(images[s:s + batch])
        y = labels[s:s + batch].long()
        pred = model(x).argmax(1)
        valid = y != IGNORE_INDEX
        valid &= y < classes
        conf += torch.bincount(y[valid] * classes + pred[valid], minlength=classes * classes).view(classes, classes)
    tp = conf.diag().double()
    gt = conf.sum(1).double()
    pr = conf.sum(0).double()
    union = gt + pr - tp
    names = [n for n, _ in class_table(classes)]
    per_class = {}
    present = []
    for c in range(classes):
        if gt[c] > 0:
            iou = (tp[c] / union[c]).item()
            present.append(iou)
            per_class[names[c]] = round(iou, 5)
        else:
            per_class[names[c]] = None  # absent from the ground truth
    return {
        "miou": round(float(np.mean(present)), 5) if present else None,
        "classes_present": len(present),
        "per_class_iou": per_class,
        "pixel_acc": round((tp.sum() / conf.sum().clamp(min=1)).item(), 5),
        "val_pixels": int(conf.sum()),
    }


def _small(meta: Dict) -> Dict:
    """The scalar / short entries of a dataset.json (for provenance)."""
    return {k: v for k, v in meta.items()
            if isinstance(v, (str, int, float, bool)) or len(json.dumps(v)) <= 500}


def lr_at(progress: float, step: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps times poly(0.9) decay over ``progress``."""
    return base_lr * min(1.0, (step + 1) / max(1, warmup)) * max(0.0, 1.0 - progress) ** 0.9


def parse_hw(s: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 128x256, got {s!r}") from None
    return h, w


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training dataset directory")
    p.add_argument("--val", required=True, help="held-out dataset directory (evaluated at full resolution)")
    p.add_argument("--out", required=True, help="run directory for checkpoint.pt, metrics.json, train.log")
    p.add_argument("--arch", default="dla46_c", choices=BACKBONES, help="DLA backbone (default: dla46_c = DLA-tiny)")
    p.add_argument("--down-ratio", type=int, default=4, choices=(2, 4, 8), help="output stride of the head")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget (evaluation not included)")
    p.add_argument("--steps", type=int, default=0,
                   help="fixed number of steps (LR schedule by step; still stops at --minutes). 0 = time-based")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=parse_hw, default=(128, 256), help="training crop HxW, multiples of 32")
    p.add_argument("--scale-min", type=float, default=0.5, help="random down-scale range before cropping (1 = off)")
    p.add_argument("--scale-max", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None,
                   help="start from this checkpoint.pt (a second, fine-tuning stage)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--log-every", type=int, default=20, help="log the mean loss every N steps")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images (0 = all)")
    p.add_argument("--val-limit", type=int, default=0, help="use only the first N val images (0 = all)")
    a = p.parse_args(argv)

    check_input_size(*a.crop)
    os.makedirs(a.out, exist_ok=True)
    log_path = os.path.join(a.out, "train.log")
    if os.path.exists(log_path):
        os.remove(log_path)
    log = Logger(log_path)
    command = " ".join([os.path.basename(sys.executable), *sys.argv]) if argv is None else " ".join(["train.py", *argv])
    log(f"command: {command}")
    log(f"torch {torch.__version__}, python {platform.python_version()}, threads {a.threads}")

    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # denormals slow CPU training down badly
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator().manual_seed(a.seed)

    t0 = time.time()
    images, labels, meta = load_dataset(a.data, a.limit)
    val_images, val_labels, val_meta = load_dataset(a.val, a.val_limit)
    check_input_size(*val_images.shape[-2:])
    log(f"loaded {len(images)} train images {tuple(images.shape[-2:])} and {len(val_images)} val images "
        f"in {time.time() - t0:.1f}s")
    if a.crop[0] > images.shape[-2] or a.crop[1] > images.shape[-1]:
        log(f"note: crop {a.crop} is larger than the images; padding with ignore")

    model = DLASeg(a.arch, a.classes, a.down_ratio)
    if a.init:
        model.load_state_dict(torch.load(a.init, map_location="cpu"))
        log(f"initialised from {a.init}")
    n_params = count_params(model)
    log(f"model DLASeg({a.arch}, classes={a.classes}, down_ratio={a.down_ratio}): {n_params / 1e6:.3f} M params")

    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        if not prm.requires_grad:
            continue  # the fixed bilinear up-sampler
        (no_decay if prm.ndim <= 1 else decay).append(prm)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)

    budget = a.minutes * 60.0
    step = 0
    seen = 0
    order: List[int] = []
    loss_sum, loss_n = 0.0, 0
    t_start = time.time()
    t_last = t_start
    model.train()
    while True:
        elapsed = time.time() - t_start
        if elapsed >= budget or (a.steps and step >= a.steps):
            break
        progress = step / a.steps if a.steps else elapsed / budget
        lr = lr_at(progress, step, a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        if len(order) < a.batch:
            order += torch.randperm(len(images), generator=gen).tolist()
        idx, order = order[:a.batch], order[a.batch:]
        x, y = make_batch(images, labels, idx, a.crop, (a.scale_min, a.scale_max), gen)
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not math.isfinite(loss.item()):
            log(f"step {step}: loss is {loss.item()}, stopping")
            return 1
        step += 1
        seen += len(idx)
        loss_sum += loss.item()
        loss_n += 1
        if step % a.log_every == 0:
            now = time.time()
            log(f"step {step:6d}  loss {loss_sum / loss_n:.4f}  lr {lr:.2e}  elapsed {now - t_start:7.1f}s  "
                f"{(now - t_last) / loss_n:.3f} s/step  {a.batch * loss_n / (now - t_last):.1f} img/s")
            loss_sum, loss_n, t_last = 0.0, 0, now
    train_s = time.time() - t_start
    log(f"training stopped after {step} steps, {seen} images, {train_s / 60:.2f} min "
        f"({train_s / max(step, 1):.3f} s/step)")

    ckpt = os.path.join(a.out, "checkpoint.pt")
    torch.save(model.state_dict(), ckpt)
    log(f"wrote {ckpt}")

    t_eval = time.time()
    metrics = evaluate(model, val_images, val_labels, a.classes)
    log(f"val ({len(val_images)} images at {val_images.shape[-2]}x{val_images.shape[-1]}, "
        f"{time.time() - t_eval:.1f}s): mIoU {metrics['miou']} over {metrics['classes_present']} classes present, "
        f"pixel acc {metrics['pixel_acc']}")
    for name, iou in metrics["per_class_iou"].items():
        log(f"  {name:14s} {'-' if iou is None else f'{iou:.4f}'}")

    metrics.update({
        "arch": a.arch,
        "architecture": "DLASeg",
        "down_ratio": a.down_ratio,
        "classes": a.classes,
        "params": n_params,
        "steps": step,
        "images_seen": seen,
        "minutes": round(train_s / 60.0, 3),
        "budget_minutes": a.minutes,
        "seed": a.seed,
        "command": command,
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(a).items()},
        "torch_version": torch.__version__,
        "threads": a.threads,
        "dataset": {
            # As given on the command line: no machine paths in shipped cards.
            "train_dir": a.data,
            "val_dir": a.val,
            "train_count": len(images),
            "val_count": len(val_images),
            "image_size": [int(images.shape[-2]), int(images.shape[-1])],
            "train_meta": _small(meta),
            "val_meta": _small(val_meta),
        },
    })
    with open(os.path.join(a.out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    log(f"wrote {os.path.join(a.out, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
