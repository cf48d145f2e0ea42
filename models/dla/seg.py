"""DLA segmentation model (DLASeg) following ucbdrive/dla ``dla_up.py``.

``DLASeg(backbone, classes, down_ratio)``:

* ``base``: a DLA backbone returning its six levels,
* ``dla_up``: :class:`DLAUp`, a chain of :class:`IDAUp` stages that fuses
  levels ``first_level .. 5`` (``first_level = log2(down_ratio)``) back to
  stride ``down_ratio``,
* ``fc``: 1x1 classifier (with bias),
* ``up``: fixed bilinear depthwise ConvTranspose2d up-sampling by
  ``down_ratio`` to input resolution.

:meth:`DLASeg.forward` returns raw logits at input resolution (what we
export); :meth:`DLASeg.forward_reference` returns ``(log_softmax(up(x)), x)``
like the reference.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from .backbone import BatchNorm, build_backbone

#: Required divisor of the input height and width (the backbone's total stride).
INPUT_MULTIPLE = 32


def fill_up_weights(up: nn.ConvTranspose2d) -> None:
    """Initialise a depthwise ConvTranspose2d as bilinear up-sampling."""
    w = up.weight.data
    f = math.ceil(w.size(2) / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    for i in range(w.size(2)):
        for j in range(w.size(3)):
            w[0, 0, i, j] = (1 - math.fabs(i / f - c)) * (1 - math.fabs(j / f - c))
    for ch in range(1, w.size(0)):
        w[ch, 0, :, :] = w[0, 0, :, :]


def check_input_size(height: int, width: int) -> None:
    """Raise ValueError unless ``height`` and ``width`` are multiples of 32."""
    if height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
        raise ValueError(
            f"DLASeg input height and width must be multiples of {INPUT_MULTIPLE}; "
            f"got H={height}, W={width}")


class IDAUp(nn.Module):
    """Iterative deep aggregation: project every input to ``out_dim``
    (``proj_i``: 1x1 conv + BN + ReLU, or identity), up-sample it by its
    factor (``up_i``: bilinear depthwise ConvTranspose2d, or identity), then
    fold left to right with ``node_i`` (kxk conv over the concat + BN + ReLU)."""

    def __init__(self, node_kernel: int, out_dim: int, channels: Sequence[int],
                 up_factors: Sequence[int]):
        super().__init__()
        self.channels = list(channels)
        self.out_dim = out_dim
        for i, c in enumerate(channels):
            if c == out_dim:
                proj: nn.Module = nn.Identity()
            else:
                proj = nn.Sequential(
                    nn.Conv2d(c, out_dim, kernel_size=1, stride=1, bias=False),
                    BatchNorm(out_dim),
                    nn.ReLU(inplace=True))
            f = int(up_factors[i])
            if f == 1:
                up: nn.Module = nn.Identity()
            else:
                up = nn.ConvTranspose2d(out_dim, out_dim, f * 2, stride=f, padding=f // 2,
                                        output_padding=0, groups=out_dim, bias=False)
                fill_up_weights(up)
            setattr(self, f"proj_{i}", proj)
            setattr(self, f"up_{i}", up)

        for i in range(1, len(channels)):
            node = nn.Sequential(
                nn.Conv2d(out_dim * 2, out_dim, kernel_size=node_kernel, stride=1,
                          padding=node_kernel // 2, bias=False),
                BatchNorm(out_dim),
                nn.ReLU(inplace=True))
            setattr(self, f"node_{i}", node)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # ConvTranspose2d is not a Conv2d: stays bilinear
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, BatchNorm):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def forward(self, layers: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        if len(layers) != len(self.channels):
            raise ValueError(f"IDAUp expects {len(self.channels)} inputs, got {len(layers)}")
        layers = [getattr(self, f"up_{i}")(getattr(self, f"proj_{i}")(l))
                  for i, l in enumerate(layers)]
        x = layers[0]
        y = []
        for i in range(1, len(layers)):
            x = getattr(self, f"node_{i}")(torch.cat([x, layers[i]], 1))
            y.append(x)
        return x, y


class DLAUp(nn.Module):
    """Chain of IDAUp stages ``ida_0 .. ida_{n-2}``, deepest first."""

    def __init__(self, channels: Sequence[int], scales: Sequence[int] = (1, 2, 4, 8, 16),
                 in_channels: Sequence[int] | None = None):
        super().__init__()
        channels = list(channels)
        in_channels = list(channels if in_channels is None else in_channels)
        scales = [int(s) for s in scales]
        self.channels = channels
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}",
                    IDAUp(3, channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]]))
            scales[j + 1:] = [scales[j]] * len(scales[j + 1:])
            in_channels[j + 1:] = [channels[j]] * len(channels[j + 1:])

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        layers = list(layers)
        if len(layers) < 2:
            raise ValueError("DLAUp needs at least two levels")
        x = layers[-1]
        for i in range(len(layers) - 1):
            x, y = getattr(self, f"ida_{i}")(layers[-i - 2:])
            layers[-i - 1:] = y
        return x


class DLASeg(nn.Module):
    """DLA segmentation network (reference ``dla_up.DLASeg``)."""

    def __init__(self, backbone: str, classes: int, down_ratio: int = 2):
        super().__init__()
        if down_ratio not in (2, 4, 8):
            raise ValueError(f"down_ratio must be 2, 4 or 8, got {down_ratio}")
        self.backbone_name = backbone
        self.classes = classes
        self.down_ratio = down_ratio
        self.first_level = int(math.log2(down_ratio))
        self.base = build_backbone(backbone, num_classes=0, return_levels=True)
        channels = self.base.channels
        scales = [2 ** i for i in range(len(channels[self.first_level:]))]
        self.dla_up = DLAUp(channels[self.first_level:], scales=scales)
        self.fc = nn.Sequential(
            nn.Conv2d(channels[self.first_level], classes, kernel_size=1, stride=1,
                      padding=0, bias=True))
        up_factor = 2 ** self.first_level
        if up_factor > 1:
            up: nn.Module = nn.ConvTranspose2d(classes, classes, up_factor * 2, stride=up_factor,
                                               padding=up_factor // 2, output_padding=0,
                                               groups=classes, bias=False)
            fill_up_weights(up)
            up.weight.requires_grad = False
        else:
            up = nn.Identity()
        self.up = up
        for m in self.fc.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            check_input_size(x.shape[-2], x.shape[-1])
        levels = self.base(x)
        return self.fc(self.dla_up(levels[self.first_level:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class logits (N, classes, H, W) at input resolution."""
        return self.up(self._features(x))

    def forward_reference(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reference output: (log-softmax at input resolution, logits at stride down_ratio)."""
        x = self._features(x)
        return torch.log_softmax(self.up(x), dim=1), x


def load_reference_state_dict(model: DLASeg, obj) -> Dict[str, List[str]]:
    """Load our checkpoint or a ucbdrive/dla DLASeg checkpoint into ``model``.

    Accepts a bare state_dict, one nested under ``"state_dict"`` (or
    ``"model"``), and ``"module."`` prefixes from DataParallel. Drops the
    backbone's ImageNet classifier (``base.fc.*``) which the segmentation model
    does not have. Any other missing/unexpected key is an error.
    Returns ``{"ignored": [...]}``.
    """
    sd = obj
    for key in ("state_dict", "model"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping):
        raise ValueError("checkpoint does not contain a state_dict")
    clean = {}
    for k, v in sd.items():
        while k.startswith("module."):
            k = k[len("module."):]
        clean[k] = v
    ignored = sorted(k for k in clean if k.startswith("base.fc.") or k.startswith("base.avgpool"))
    for k in ignored:
        del clean[k]
    missing, unexpected = model.load_state_dict(clean, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing keys {missing[:10]}"
                         f"{'...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
                         f"{'...' if len(unexpected) > 10 else ''}")
    return {"ignored": ignored}
