"""Preparing a model and its input for measuring: eval mode, unfused attention, checks.

Measuring never changes the model: :func:`measuring` enforces eval mode (no dropout,
BatchNorm running statistics left alone) and unfused attention, and restores both on
exit, so outputs and ``state_dict`` are the same before and after.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = [
    "check_input",
    "flag_off",
    "fold_batchnorm",
    "measuring",
    "measuring_if_module",
    "tensor_output",
]


@contextlib.contextmanager
def flag_off(model: nn.Module, flag: str) -> Iterator[nn.Module]:
    """Set the boolean attribute ``flag`` of every module that has one to False; restore on exit.

    Used for ``fused_attn`` (timm attention) and ``inplace`` (activations).
    """
    saved = {m: getattr(m, flag) for m in model.modules() if isinstance(getattr(m, flag, None), bool)}
    try:
        for m in saved:
            setattr(m, flag, False)
        yield model
    finally:
        for m, value in saved.items():
            setattr(m, flag, value)


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with unfused attention; restore both on exit.

    Fused attention (``F.scaled_dot_product_attention``) supports neither forward mode
    nor double backward on the CPU. Modules that expose a ``fused_attn`` flag (timm's
    attention blocks) are switched to the explicit softmax path while measuring. Eval
    mode turns dropout off and keeps BatchNorm's running statistics as they are.
    """
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with flag_off(model, "fused_attn"):
            yield model
    finally:
        for m, flag in training.items():
            m.training = flag


def measuring_if_module(f: Callable) -> contextlib.AbstractContextManager:
    """:func:`measuring` for an ``nn.Module``; nothing for any other function."""
    return measuring(f) if isinstance(f, nn.Module) else contextlib.nullcontext(f)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` with each BatchNorm folded into the conv before it.

    In eval mode ``BN(conv(x))`` is one affine convolution, so folding changes outputs
    only by float rounding (about 1e-7 relative in float32) while removing a third of
    the tangent work of a CNN. Traced with ``torch.fx``; returns ``model`` itself when
    it has no BatchNorm or cannot be traced. The original model is never modified.
    Half-precision models (``float16``, ``bfloat16``) are folded in float32 and the
    folded weights rounded once to their dtype (folding in half precision rounds the
    scale ``gamma / sqrt(var + eps)`` first and multiplies the error of the weights).

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> [type(m).__name__ for m in fold_batchnorm(net).modules()][1:]
    ['Conv2d']
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    try:
        from torch.fx.experimental.optimization import fuse

        half = {p.dtype for p in model.parameters()} & {torch.float16, torch.bfloat16}
        if not half:
            return fuse(model, inplace=False)
        if len(half) > 1 or any(p.dtype not in half for p in model.parameters()
                                if p.is_floating_point()):
            return model  # mixed precision: folding would change which layers run in which dtype
        (dtype,) = half
        wide = copy.deepcopy(model).float()
        return fuse(wide, inplace=True).to(dtype)
    except Exception:  # noqa: BLE001  (untraceable models run unfolded)
        return model


def check_input(x: torch.Tensor, who: str) -> torch.Tensor:
    """``x`` checked (a non-empty, finite, floating-point batch) and made contiguous.

    Expanded inputs (stride 0, e.g. ``x[:1].expand(4, ...)``) are copied: forward-mode AD
    cannot write tangents into memory that several elements share.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: x must be floating point, got {x.dtype}; convert with x.float()")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"{who}: x is an empty batch (shape {tuple(x.shape)}); pass at least one image")
    if not torch.isfinite(x).all():
        raise ValueError(f"{who}: x contains NaN or infinite values; check the data pipeline")
    return x.contiguous()


def tensor_output(out: object, who: str) -> torch.Tensor:
    """``out`` if it is a tensor; a clear error for models that return tuples or dicts."""
    if isinstance(out, torch.Tensor):
        return out
    raise TypeError(
        f"{who}: the model returned a {type(out).__name__}, not a tensor; measure a module "
        "whose forward returns the logits tensor, e.g. one that returns model(x)[0] or "
        "model(x)['logits']"
    )
