"""Parameter and multiply-accumulate counting for conv networks."""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not (the fixed ``up`` layer included)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape=(1, 3, 256, 512),
               transpose_by_output: bool = False) -> Dict[str, int]:
    """Count conv MACs with forward hooks on Conv2d / ConvTranspose2d.

    Conv2d: ``out elements * (in_ch / groups) * kh * kw``.

    ConvTranspose2d: by default the work actually done,
    ``in elements * (out_ch / groups) * kh * kw`` (each input pixel scatters a
    kh x kw kernel). ``transpose_by_output=True`` applies the Conv2d formula
    to it instead (``out elements * (in_ch / groups) * kh * kw``), which
    over-counts a stride-f up-sampler by f^2.

    Returns ``{"total", "conv", "conv_transpose", "<top-level child>": ...}``.
    """
    counts: Dict[str, int] = {"total": 0, "conv": 0, "conv_transpose": 0}
    hooks = []

    def hook_for(top: str):
        def hook(m: nn.Module, inp, out):
            kh, kw = m.kernel_size
            if isinstance(m, nn.ConvTranspose2d) and not transpose_by_output:
                macs = inp[0].numel() * (m.out_channels // m.groups) * kh * kw
            else:
                macs = out.numel() * (m.in_channels // m.groups) * kh * kw
            kind = "conv_transpose" if isinstance(m, nn.ConvTranspose2d) else "conv"
            counts[kind] += macs
            counts["total"] += macs
            counts[top] = counts.get(top, 0) + macs
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            hooks.append(m.register_forward_hook(hook_for(name.split(".")[0] or "model")))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return counts
