"""Preparing a model and its input for measuring: eval mode, unfused attention, checks.

Measuring never changes the model: :func:`measuring` enforces eval mode (no dropout,
BatchNorm running statistics left alone) and unfused attention, and restores both on
exit, so outputs and ``state_dict`` are the same before and after.
"""

from __future__ import annotations

import contextlib
import copy
import numbers
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = [
    "check_input",
    "check_seed",
    "flag_off",
    "fold_batchnorm",
    "measuring",
    "measuring_if_module",
    "seeded_generator",
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


# Traced operators whose ``training`` argument a trace freezes: (kind, argument index).
_TRAIN_ARGS = {
    "aten::dropout": 2, "aten::dropout_": 2, "aten::feature_dropout": 2,
    "aten::feature_dropout_": 2, "aten::alpha_dropout": 2, "aten::alpha_dropout_": 2,
    "aten::feature_alpha_dropout": 2, "aten::feature_alpha_dropout_": 2,
    "aten::batch_norm": 5, "aten::instance_norm": 5,
}


def _check_trace_mode(model: nn.Module) -> None:
    """Raise if a ``torch.jit.trace`` in ``model`` froze train-mode dropout or BatchNorm."""
    checked: list[str] = []
    for name, m in model.named_modules():
        if not isinstance(m, torch.jit.TracedModule) or any(
                name.startswith(c + ".") or c == "" for c in checked):
            continue  # the inlined graph of a traced module covers its submodules
        checked.append(name)
        for node in m.inlined_graph.nodes():
            at = _TRAIN_ARGS.get(node.kind())
            if at is None:
                continue
            arg = list(node.inputs())[at]
            if arg.node().kind() == "prim::Constant" and arg.toIValue() is True:
                op = node.kind().split("::")[1]
                raise ValueError(
                    f"the traced model was recorded in train mode: its {op} runs in train mode "
                    "whatever .eval() says (a trace freezes the flag), so every measurement "
                    "would differ. Trace it in eval mode: torch.jit.trace(model.eval(), x)"
                )


def _restore_training(model: nn.Module, training: dict[nn.Module, bool]) -> None:
    """Call ``train(flag)`` where a module's mode differs, parents before children."""
    for m in model.modules():  # pre-order: a parent's train() also sets its children
        if m.training != training.get(m, m.training):
            m.train(training[m])


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with unfused attention; restore both on exit.

    Fused attention (``F.scaled_dot_product_attention``) supports neither forward mode
    nor double backward on the CPU. Modules that expose a ``fused_attn`` flag (timm's
    attention blocks) are switched to the explicit softmax path while measuring. Eval
    mode turns dropout off and keeps BatchNorm's running statistics as they are. Modes
    are switched and restored through the modules' own ``train()``/``eval()`` methods,
    so modules that act on them (escnn builds its filters on ``eval()`` and drops them
    on ``train()``) end as they began, ``state_dict`` included. A ``torch.jit.trace``
    recorded in train mode raises: its dropout cannot be switched off.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    >>> with measuring(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    if any(p.device.type == "meta" for p in model.parameters()):
        raise ValueError("the model's parameters are on the meta device and hold no values; "
                         "materialise them first, e.g. model.to_empty(device='cpu') and "
                         "model.load_state_dict(...)")
    _check_trace_mode(model)
    training = {m: m.training for m in model.modules()}
    try:
        if any(training.values()):
            model.eval()
        with flag_off(model, "fused_attn"):
            yield model
    finally:
        _restore_training(model, training)


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
    if x.device.type == "meta":
        raise ValueError(f"{who}: x is on the meta device and holds no values; pass real images")
    if not torch.isfinite(x).all():
        raise ValueError(f"{who}: x contains NaN or infinite values; check the data pipeline")
    return x.contiguous()


def check_seed(seed: object, who: str) -> int | torch.Generator:
    """``seed`` as a Python int (any integer type, ``>= 0``) or the caller's ``torch.Generator``.

    Every seeded lielib function takes ``seed: int | torch.Generator``: an int seeds a
    private generator (never the global RNG), a generator is drawn from (and advances).

    >>> import numpy as np
    >>> check_seed(np.int64(3), "demo")
    3
    """
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{who}: seed must be an int or a torch.Generator, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{who}: seed must be >= 0, got {seed}")
    return int(seed)


def seeded_generator(seed: object, who: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The caller's generator, or a fresh one on ``device`` seeded with the int ``seed``.

    >>> torch.equal(torch.rand(2, generator=seeded_generator(0, "demo")),
    ...             torch.rand(2, generator=torch.Generator().manual_seed(0)))
    True
    """
    seed = check_seed(seed, who)
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(seed)


def tensor_output(out: object, who: str) -> torch.Tensor:
    """``out`` if it is a tensor; a clear error for models that return tuples or dicts."""
    if isinstance(out, torch.Tensor):
        return out
    raise TypeError(
        f"{who}: the model returned a {type(out).__name__}, not a tensor; measure a module "
        "whose forward returns the logits tensor, e.g. one that returns model(x)[0] or "
        "model(x)['logits']"
    )
