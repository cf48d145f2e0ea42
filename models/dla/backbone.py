"""DLA backbones (Deep Layer Aggregation, Yu et al., CVPR 2018).

Structure and module names follow the reference implementation
ucbdrive/dla (``dla.py``) so that its checkpoints load with matching
state_dict keys:

* ``base_layer``: 7x7 conv, stride 1 + BN + ReLU
* ``level0`` / ``level1``: plain 3x3 conv levels (``_make_conv_level``)
* ``level2`` .. ``level5``: recursive :class:`Tree` aggregation, each
  down-sampling by 2 with MaxPool.

Differences from the reference (behaviour-preserving):

* Block parameters (bottleneck expansion, cardinality) are constructor
  arguments instead of mutated class attributes.
* Non-leaf trees keep their ``project`` layer (so state_dict keys match) but do
  not evaluate it: in the reference its output is passed to a sub-tree that
  ignores it, so skipping it changes no output.
* ``num_classes=0`` builds a pure feature extractor without ``avgpool``/``fc``
  (used by the segmentation model; reference checkpoints' ``base.fc.*`` keys are
  dropped on load, see :func:`models.dla.seg.load_reference_state_dict`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

BatchNorm = nn.BatchNorm2d


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (DLA-34)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride,
                               padding=dilation, bias=False, dilation=dilation)
        self.bn1 = BatchNorm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1,
                               padding=dilation, bias=False, dilation=dilation)
        self.bn2 = BatchNorm(planes)
        self.stride = stride

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if residual is None:
            residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + residual
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck; the inner width is ``planes // expansion``."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 expansion: int = 2):
        super().__init__()
        bottle_planes = planes // expansion
        self.conv1 = nn.Conv2d(inplanes, bottle_planes, kernel_size=1, bias=False)
        self.bn1 = BatchNorm(bottle_planes)
        self.conv2 = nn.Conv2d(bottle_planes, bottle_planes, kernel_size=3, stride=stride,
                               padding=dilation, bias=False, dilation=dilation)
        self.bn2 = BatchNorm(bottle_planes)
        self.conv3 = nn.Conv2d(bottle_planes, planes, kernel_size=1, bias=False)
        self.bn3 = BatchNorm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if residual is None:
            residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + residual
        return self.relu(out)


class BottleneckX(nn.Module):
    """ResNeXt-style bottleneck: grouped 3x3 conv with ``cardinality`` groups.

    As in the reference, the inner width is ``planes * cardinality // 32``
    (i.e. ``planes`` for the default cardinality 32).
    """

    expansion = 2
    cardinality = 32

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 cardinality: int = 32):
        super().__init__()
        bottle_planes = planes * cardinality // 32
        self.conv1 = nn.Conv2d(inplanes, bottle_planes, kernel_size=1, bias=False)
        self.bn1 = BatchNorm(bottle_planes)
        self.conv2 = nn.Conv2d(bottle_planes, bottle_planes, kernel_size=3, stride=stride,
                               padding=dilation, bias=False, dilation=dilation,
                               groups=cardinality)
        self.bn2 = BatchNorm(bottle_planes)
        self.conv3 = nn.Conv2d(bottle_planes, planes, kernel_size=1, bias=False)
        self.bn3 = BatchNorm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if residual is None:
            residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + residual
        return self.relu(out)


class Root(nn.Module):
    """Aggregation node: conv over the channel concat of its children + BN
    (+ residual from the first child) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, residual: bool):
        super().__init__()
        # The reference always uses a 1x1 kernel here (kernel_size only sets padding).
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=1, bias=False,
                              padding=(kernel_size - 1) // 2)
        self.bn = BatchNorm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, *children: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(torch.cat(children, 1)))
        if self.residual:
            x = x + children[0]
        return self.relu(x)


class Tree(nn.Module):
    """Hierarchical deep aggregation tree (reference ``Tree``)."""

    def __init__(self, levels: int, block: Callable[..., nn.Module], in_channels: int,
                 out_channels: int, stride: int = 1, level_root: bool = False,
                 root_dim: int = 0, root_kernel_size: int = 1, dilation: int = 1,
                 root_residual: bool = False):
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * out_channels
        if level_root:
            root_dim += in_channels
        if levels == 1:
            self.tree1 = block(in_channels, out_channels, stride, dilation=dilation)
            self.tree2 = block(out_channels, out_channels, 1, dilation=dilation)
        else:
            self.tree1 = Tree(levels - 1, block, in_channels, out_channels, stride,
                              root_dim=0, root_kernel_size=root_kernel_size,
                              dilation=dilation, root_residual=root_residual)
            self.tree2 = Tree(levels - 1, block, out_channels, out_channels,
                              root_dim=root_dim + out_channels,
                              root_kernel_size=root_kernel_size,
                              dilation=dilation, root_residual=root_residual)
        if levels == 1:
            self.root = Root(root_dim, out_channels, root_kernel_size, root_residual)
        self.level_root = level_root
        self.root_dim = root_dim
        self.downsample = None
        self.project = None
        self.levels = levels
        if stride > 1:
            self.downsample = nn.MaxPool2d(stride, stride=stride)
        if in_channels != out_channels:
            # Kept for every tree (also non-leaf ones, where it is unused) so
            # that state_dict keys match the reference checkpoints.
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False),
                BatchNorm(out_channels),
            )

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                children: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root(x2, x1, *children)
        # Non-leaf: the reference computes project(bottom) and hands it to the
        # sub-tree, which ignores it; skipping it is output-identical.
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA(nn.Module):
    """DLA backbone. With ``return_levels=True`` forward returns the six level
    outputs (strides 1, 2, 4, 8, 16, 32)."""

    def __init__(self, levels: Sequence[int], channels: Sequence[int], num_classes: int = 1000,
                 block: Callable[..., nn.Module] = BasicBlock, residual_root: bool = False,
                 return_levels: bool = False, pool_size: int = 7):
        super().__init__()
        self.channels = list(channels)
        self.levels = list(levels)
        self.return_levels = return_levels
        self.num_classes = num_classes
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, channels[0], kernel_size=7, stride=1, padding=3, bias=False),
            BatchNorm(channels[0]),
            nn.ReLU(inplace=True))
        self.level0 = self._make_conv_level(channels[0], channels[0], levels[0])
        self.level1 = self._make_conv_level(channels[0], channels[1], levels[1], stride=2)
        self.level2 = Tree(levels[2], block, channels[1], channels[2], 2,
                           level_root=False, root_residual=residual_root)
        self.level3 = Tree(levels[3], block, channels[2], channels[3], 2,
                           level_root=True, root_residual=residual_root)
        self.level4 = Tree(levels[4], block, channels[3], channels[4], 2,
                           level_root=True, root_residual=residual_root)
        self.level5 = Tree(levels[5], block, channels[4], channels[5], 2,
                           level_root=True, root_residual=residual_root)
        if num_classes:
            self.avgpool = nn.AvgPool2d(pool_size)
            self.fc = nn.Conv2d(channels[-1], num_classes, kernel_size=1, stride=1,
                                padding=0, bias=True)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, BatchNorm):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    @staticmethod
    def _make_conv_level(inplanes: int, planes: int, convs: int, stride: int = 1,
                         dilation: int = 1) -> nn.Sequential:
        modules: List[nn.Module] = []
        for i in range(convs):
            modules.extend([
                nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride if i == 0 else 1,
                          padding=dilation, bias=False, dilation=dilation),
                BatchNorm(planes),
                nn.ReLU(inplace=True)])
            inplanes = planes
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor):
        y = []
        x = self.base_layer(x)
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            y.append(x)
        if self.return_levels:
            return y
        if not self.num_classes:
            raise RuntimeError("DLA built with num_classes=0 has no classifier; "
                               "use return_levels=True")
        x = self.fc(self.avgpool(x))
        return x.flatten(1)


# name -> (levels, channels, block factory, residual_root); identical to the
# reference factories in ucbdrive/dla dla.py.
_SPECS = {
    "dla34": ([1, 1, 1, 2, 2, 1], [16, 32, 64, 128, 256, 512], BasicBlock, False),
    "dla46_c": ([1, 1, 1, 2, 2, 1], [16, 32, 64, 64, 128, 256], Bottleneck, False),
    "dla46x_c": ([1, 1, 1, 2, 2, 1], [16, 32, 64, 64, 128, 256], BottleneckX, False),
    "dla60x_c": ([1, 1, 1, 2, 3, 1], [16, 32, 64, 64, 128, 256], BottleneckX, False),
    "dla60": ([1, 1, 1, 2, 3, 1], [16, 32, 128, 256, 512, 1024], Bottleneck, False),
    "dla60x": ([1, 1, 1, 2, 3, 1], [16, 32, 128, 256, 512, 1024], BottleneckX, False),
    "dla102": ([1, 1, 1, 3, 4, 1], [16, 32, 128, 256, 512, 1024], Bottleneck, True),
    "dla102x": ([1, 1, 1, 3, 4, 1], [16, 32, 128, 256, 512, 1024], BottleneckX, True),
    "dla102x2": ([1, 1, 1, 3, 4, 1], [16, 32, 128, 256, 512, 1024],
                 partial(BottleneckX, cardinality=64), True),
    "dla169": ([1, 1, 2, 3, 5, 1], [16, 32, 128, 256, 512, 1024], Bottleneck, True),
}

BACKBONES = tuple(_SPECS)


def build_backbone(name: str, **kwargs) -> DLA:
    """Build a DLA backbone by reference factory name (e.g. ``"dla46_c"``)."""
    try:
        levels, channels, block, residual_root = _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown DLA backbone {name!r}; choose from {', '.join(BACKBONES)}") from None
    return DLA(levels, channels, block=block, residual_root=residual_root, **kwargs)


def _factory(name: str):
    def make(**kwargs) -> DLA:
        return build_backbone(name, **kwargs)
    make.__name__ = name
    make.__doc__ = f"Reference ``{name}`` backbone (no pretrained weights are downloaded)."
    return make


dla34 = _factory("dla34")
dla46_c = _factory("dla46_c")
dla46x_c = _factory("dla46x_c")
dla60x_c = _factory("dla60x_c")
dla60 = _factory("dla60")
dla60x = _factory("dla60x")
dla102 = _factory("dla102")
dla102x = _factory("dla102x")
dla102x2 = _factory("dla102x2")
dla169 = _factory("dla169")
