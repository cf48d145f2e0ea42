"""Cityscapes trainId classes (0..18) with the standard Cityscapes palette,
plus the ImageNet normalisation the models are trained with."""

from __future__ import annotations

from typing import List, Tuple

CLASSES: List[Tuple[str, Tuple[int, int, int]]] = [
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
]

IGNORE_INDEX = 255
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def class_table(num_classes: int) -> List[Tuple[str, Tuple[int, int, int]]]:
    """Names and colours for ``num_classes`` classes: the Cityscapes table for
    19, otherwise ``class_<i>`` with a deterministic palette."""
    if num_classes == len(CLASSES):
        return list(CLASSES)
    return [(f"class_{i}", ((i * 67) % 256, (i * 139) % 256, (i * 211) % 256))
            for i in range(num_classes)]
