"""Fold eval-mode BatchNorm2d layers into the Conv2d that feeds them."""

from __future__ import annotations

import copy
from typing import List, Tuple

import torch
from torch import nn


def _fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite ``conv`` in place so that ``conv'(x) == bn(conv(x))`` (eval mode)."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        new_bias = (bias - bn.running_mean) * scale + bn.bias
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias.detach().clone())
        else:
            conv.bias.copy_(new_bias)


def _pairs(module: nn.Module) -> List[Tuple[str, str]]:
    """(conv attribute, bn attribute) pairs that are applied back to back."""
    names = dict(module.named_children())
    pairs = []
    if isinstance(module, nn.Sequential):
        keys = list(names)
        for a, b in zip(keys, keys[1:]):
            if isinstance(names[a], nn.Conv2d) and isinstance(names[b], nn.BatchNorm2d):
                pairs.append((a, b))
        return pairs
    # Blocks / Root: convN -> bnN, conv -> bn.
    for name, child in names.items():
        if isinstance(child, nn.Conv2d) and name.startswith("conv"):
            bn_name = "bn" + name[len("conv"):]
            if isinstance(names.get(bn_name), nn.BatchNorm2d):
                pairs.append((name, bn_name))
    return pairs


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a copy unless ``inplace``) in eval mode with every
    BatchNorm2d folded into its preceding Conv2d and replaced by Identity.

    Raises RuntimeError if a BatchNorm2d is left that could not be paired
    with a conv (the DLA modules in this package have none).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        for conv_name, bn_name in _pairs(module):
            _fuse(getattr(module, conv_name), getattr(module, bn_name))
            setattr(module, bn_name, nn.Identity())
    left = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise RuntimeError(f"BatchNorm layers not folded: {left}")
    return model


@torch.no_grad()
def calibrate_bn(model: nn.Module, input_shape=(2, 3, 128, 256), steps: int = 4,
                 seed: int = 0) -> nn.Module:
    """Give an untrained model realistic BatchNorm running statistics.

    A freshly initialised DLA in eval mode (running mean 0, var 1) produces
    activations that grow by orders of magnitude through the network, which
    makes float32 comparisons (fold, ONNX) meaningless. This runs ``steps``
    forward passes on seeded N(0, 1) inputs in train mode with cumulative
    averaging, then puts the model in eval mode. Parameters are not changed.
    """
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for _ in range(steps):
        model(torch.randn(input_shape, generator=gen))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()
