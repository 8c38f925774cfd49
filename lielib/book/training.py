"""One training loop for the book's experiments: ``fit``, its schedule, accuracy, checkpoints.

Every model the book trains (the Fashion-MNIST zoo, the anti-aliased twin, the rotated-MNIST
MAE and its fine-tuned classifiers) goes through :func:`fit`:

- optimiser: whatever the caller builds (AdamW everywhere in the book);
- schedule: linear warm-up over ``warmup`` steps, then cosine decay to 0,
  ``lr(s) = lr_max * 0.5 * (1 + cos(pi * (s - w) / (S - w)))`` (:func:`warmup_cosine`);
- gradient norm clipped at ``grad_clip``;
- a loss curve: the mean training loss of every ``log_every`` steps.

Checkpoints are written atomically (:func:`save_checkpoint`, through
:func:`lielib.book.results.atomic_path`: a temporary file in the same folder, then
``os.replace``), so a killed run leaves the old file or the new one, never a
truncated one, and :func:`load_checkpoint` names the file when it cannot be read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .results import atomic_path

__all__ = [
    "CheckpointError",
    "accuracy",
    "batches",
    "fit",
    "load_checkpoint",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "warmup_cosine",
]


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read; the message names the file."""


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up, then cosine decay to 0.

    ``(s + 1) / w`` for ``s < w``, else ``0.5 * (1 + cos(pi * (s - w) / (S - w)))``.
    """
    if total < 1 or not 0 <= warmup <= total:
        raise ValueError(f"need 0 <= warmup <= total and total >= 1, got warmup={warmup}, "
                         f"total={total}")
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500,
             device: Any = "cpu") -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``(x, y)``, in eval mode.

    The model's training flag is restored afterwards.
    """
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as images (and at least one), got {len(x)} "
                         f"images and {len(y)} labels")
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            logits = model(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(-1) == yb).sum().item()
    finally:
        model.train(was_training)
    return correct / len(x), loss / len(x)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256,
                          device: Any = "cpu") -> int:
    """Re-estimate BatchNorm running statistics on ``x`` as exact averages over batches.

    ``running_mean = mean over batches of E_batch[h]`` (likewise the variance), computed in
    training mode with ``momentum=None``; no parameter changes. This is what makes an
    untrained BatchNorm network in eval mode the function that training starts from
    (default statistics, mean 0 and variance 1, give a nearly constant function), and what
    makes a short training run's running averages forget their initial values. Returns the
    number of BatchNorm layers (0: nothing to do). The model is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        model.eval()
        return 0
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device))
    finally:
        for m, mom in momenta.items():
            m.momentum = mom
        model.eval()
    return len(bns)


def batches(x: torch.Tensor, y: torch.Tensor | None, *, batch_size: int, gen: torch.Generator,
            augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Endless seeded batches: a fresh permutation every pass, the last partial batch dropped.

    ``augment(xb, gen)`` transforms each batch with draws from the same generator, after
    the permutation, so a seed names the whole stream of batches.
    """
    if not 0 < batch_size <= len(x):
        raise ValueError(f"batch_size must be in 1..{len(x)}, got {batch_size}")
    while True:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            b = order[i : i + batch_size]
            xb = x[b] if augment is None else augment(x[b], gen)
            yield xb, (y[b] if y is not None else None)


def fit(
    model: nn.Module,
    batches: Iterator[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    warmup: int,
    grad_clip: float | None = 1.0,
    start: int = 0,
    log_every: int = 10,
    on_step: Callable[[int], None] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` for steps ``start .. steps - 1`` and return its loss curve.

    Args:
        model: put in training mode for the run.
        batches: yields one batch per step (``next(batches)``).
        loss_fn: ``loss_fn(model, batch)``, a scalar loss.
        optimizer: its param groups' ``lr`` are the peak rates (saved as ``initial_lr``).
        steps: the schedule's total number of steps ``S``.
        warmup: warm-up steps ``w`` of :func:`warmup_cosine`.
        grad_clip: maximum gradient norm (``None``: no clipping).
        start: the first step (a resumed run); the schedule is a function of the step.
        log_every: the curve holds the mean loss of each block of this many steps.
        on_step: called with the number of steps done after each step (snapshots).

    Returns:
        ``[{"step": s, "loss": mean loss of steps (s - log_every, s], "lr": lr at s}, ...]``.
    """
    from tqdm.auto import tqdm

    if steps < 1 or not 0 <= start <= steps:
        raise ValueError(f"need steps >= 1 and 0 <= start <= steps, got steps={steps}, "
                         f"start={start}")
    if log_every < 1:
        raise ValueError(f"log_every must be at least 1, got {log_every}")
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    curve: list[dict[str, float]] = []
    block: list[float] = []
    model.train()
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress, mininterval=10)
    for step in range(start, steps):
        factor = warmup_cosine(step, steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * group.get("lr_scale", 1.0) * factor
        loss = loss_fn(model, next(batches))
        if not torch.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"{desc}: the loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        block.append(loss.item())
        done = step + 1
        if len(block) == log_every or done == steps:
            curve.append({"step": done, "loss": sum(block) / len(block),
                          "lr": optimizer.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{curve[-1]['loss']:.3f}", refresh=False)
            block = []
        bar.update(1)
        if on_step is not None:
            on_step(done)
    bar.close()
    return curve


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically.

    Tensors are detached and moved to the CPU first, so the file loads anywhere.
    """
    path = Path(path)

    def cpu(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu()
        if isinstance(obj, dict):
            return {k: cpu(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(cpu(v) for v in obj)
        return obj

    with atomic_path(path) as tmp:
        torch.save(cpu(state), tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: no such file (a folder is reported as a folder).
        CheckpointError: the file is empty, truncated or not a checkpoint; names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (an interrupted write?); delete it "
                              "and rerun the command that made it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}. "
                              "Delete it and rerun the command that made it.") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state
