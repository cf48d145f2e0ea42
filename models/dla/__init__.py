"""Deep Layer Aggregation backbones and the DLASeg segmentation model,
structured like ucbdrive/dla so its state_dicts load unchanged."""

from .backbone import (BACKBONES, DLA, BasicBlock, Bottleneck, BottleneckX, Root, Tree,
                       build_backbone, dla34, dla46_c, dla46x_c, dla60, dla60x, dla60x_c,
                       dla102, dla102x, dla102x2, dla169)
from .seg import (INPUT_MULTIPLE, DLASeg, DLAUp, IDAUp, check_input_size, fill_up_weights,
                  load_reference_state_dict)
from .fold import calibrate_bn, fold_batchnorm
from .stats import count_macs, count_params

__all__ = [
    "BACKBONES", "DLA", "BasicBlock", "Bottleneck", "BottleneckX", "Root", "Tree",
    "build_backbone", "dla34", "dla46_c", "dla46x_c", "dla60", "dla60x", "dla60x_c",
    "dla102", "dla102x", "dla102x2", "dla169",
    "INPUT_MULTIPLE", "DLASeg", "DLAUp", "IDAUp", "check_input_size", "fill_up_weights",
    "load_reference_state_dict", "calibrate_bn", "fold_batchnorm", "count_macs", "count_params",
]
