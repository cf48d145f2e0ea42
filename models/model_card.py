#!/usr/bin/env python3
"""Render a model card (the JSON that export.py embeds and writes as
MODEL.onnx.card.json) as a Markdown page for people.

    python models/model_card.py models/dla-tiny-seg.onnx.card.json > models/dla-tiny-seg.md

Only the standard library is needed.
"""
import argparse
import json
import sys


def render(card: dict, earlier: list) -> str:
    t = card.get("training", {})
    m = card.get("metrics", {})
    ds = t.get("dataset") or {}
    inp = card["input"]
    out = []
    out.append(f"# Model card: {card['name']}\n")
    out.append(f"- architecture: {card.get('architecture')} with backbone `{card.get('backbone')}`, "
               f"output stride {card.get('down_ratio')} (logits up-sampled to the input size inside the model)")
    out.append(f"- input: 1x3x{inp['height']}x{inp['width']} float32, {inp['color']}, "
               f"x/{inp['scale']:g} then mean {inp['mean']} / std {inp['std']}")
    if card.get("params"):
        out.append(f"- parameters: {card['params']:,} ({card['params'] / 1e6:.3f} M, BatchNorm included); "
                   f"{card.get('gmac')} GMAC per frame")
    out.append("")
    out.append("## Training")
    for i, stage in enumerate(earlier, 1):
        ds_e = stage.get("dataset") or {}
        out.append(f"Stage {i}: {stage.get('steps')} steps, {stage.get('images_seen')} images seen, "
                   f"{stage.get('minutes')} min, held-out mIoU {stage.get('miou')}; "
                   f"{ds_e.get('train_count')} training scenes.")
        out.append(f"`{stage.get('command')}`\n")
    if earlier:
        out.append(f"Stage {len(earlier) + 1} (the shipped weights), starting from the stage {len(earlier)} checkpoint:")
    if t.get("random_init"):
        out.append(f"Untrained (random initialisation, seed {t.get('seed')}).")
    else:
        out.append(f"- data: {ds.get('train_count')} synthetic training scenes and {ds.get('val_count')} "
                   f"held-out scenes at {ds.get('image_size')} (HxW), from `dla-tools synth` "
                   f"(train: seed {(ds.get('train_meta') or {}).get('seed')}, "
                   f"held-out: seed {(ds.get('val_meta') or {}).get('seed')})")
        out.append(f"- schedule: {t.get('steps')} steps, {t.get('images_seen')} images seen, "
                   f"{t.get('minutes')} min on CPU, seed {t.get('seed')}, torch {t.get('torch_version')}")
        out.append(f"- command: `{t.get('command')}`")
    out.append("")
    out.append("## Held-out quality")
    if m.get("heldout_miou") is not None:
        out.append(f"mIoU **{m['heldout_miou']:.4f}** over the classes present in the held-out ground truth; "
                   f"pixel accuracy {m.get('pixel_acc'):.4f}.\n")
    out.append("| id | class | colour | held-out IoU |")
    out.append("|---:|---|---|---:|")
    per = m.get("per_class_iou") or {}
    for c in card["classes"]:
        r, g, b = c["color"]
        iou = per.get(c["name"])
        out.append(f"| {c['id']} | {c['name']} | `#{r:02x}{g:02x}{b:02x}` | "
                   f"{'not in the data' if iou is None else f'{iou:.4f}'} |")
    out.append("")
    out.append("## Limits")
    out.append("Trained only on synthetic street scenes rendered by `dla-tools synth`: flat-shaded "
               "geometry, procedural textures. It demonstrates and tests the whole path; on real "
               "camera images expect poor results. Classes absent from the synthetic data (rider, "
               "truck, bus, train, motorcycle, bicycle) are never predicted reliably.")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("card", help="MODEL.onnx.card.json")
    ap.add_argument("--earlier-stage", action="append", default=[], metavar="METRICS_JSON",
                    help="metrics.json of an earlier training stage the weights started from (repeatable)")
    a = ap.parse_args()
    earlier = []
    for path in a.earlier_stage:
        with open(path, encoding="utf-8") as f:
            earlier.append(json.load(f))
    with open(a.card, encoding="utf-8") as f:
        sys.stdout.write(render(json.load(f), earlier))
    return 0


if __name__ == "__main__":
    sys.exit(main())
