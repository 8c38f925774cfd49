"""Training the mini-zoo on Fashion-MNIST with one shared supervised recipe.

The recipe (the same for every architecture; only the peak learning rate differs: 2e-3
for the CNNs and Mixers, 1e-3 for the ViTs, 5e-4 for EfficientNet-B0, whose loss diverged
at 2e-3 in a short budget):

- data: a seeded subset of ``n_train`` Fashion-MNIST training images (the budget), padded
  28 -> 32 px and normalised, ``x = (pad(u / 255) - MEAN) / STD``; no augmentation by
  default (``augment="shift"`` adds random shifts of up to 2 px, for experiments only:
  shift augmentation teaches translation invariance, which is what the book measures);
- optimiser: AdamW, weight decay 0.05, batch 64, gradient norm clipped at 1;
- schedule: linear warm-up over the first 5% of steps, then cosine decay to 0,
  ``lr(s) = lr_max * 0.5 * (1 + cos(pi * (s - w) / (S - w)))``;
- loss: cross-entropy; seeded initialisation, subset and shuffling;
- BatchNorm statistics are re-estimated after training on (up to 2,000 of) the same
  training images, as exact averages (no parameter changes): with the smallest budgets a
  network sees a few dozen batches, too few for the running averages to forget their
  initial values, and a BatchNorm CNN would otherwise sit at chance accuracy in eval mode.

Test accuracy is measured on a fixed seeded subset of 2,000 of the 10,000 test images
(``--n-test 10000`` for all of them; the standard error at 80% is about 0.9 points). Checkpoints go to the cache folder
(:func:`lielib.book.zoo.cache_dir`), one record per model to ``results/zoo/models/<name>.json``
and the table of all trained models to ``results/zoo/accuracy.csv``. A model whose
checkpoint exists is skipped, so an interrupted run resumes where it stopped::

    python -m lielib.book.train --zoo                  # the CPU zoo, one torch thread
    python -m lielib.book.train --zoo --only vit_p4    # one model
    python -m lielib.book.train --zoo --scale full --device cuda   # paper-scale, on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import zoo
from .data import load_idx
from .results import ROOT, metadata, read_json, write_json, write_table

__all__ = [
    "RESULTS_DIR",
    "TrainConfig",
    "accuracy_table",
    "evaluate",
    "fashion_mnist",
    "main",
    "recalibrate_batchnorm",
    "test_subset",
    "train_model",
    "train_zoo",
]

RESULTS_DIR = ROOT / "results" / "zoo"
BN_RECALIBRATION_IMAGES = 2000


@dataclass(frozen=True)
class TrainConfig:
    """The shared recipe; ``lr=None`` takes the zoo entry's peak learning rate."""

    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    augment: str = "none"
    seed: int = 0
    max_steps: int | None = None
    """Stop after this many steps (smoke tests); ``None`` trains the whole budget."""


def fashion_mnist(split: str, *, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` preprocessed as the zoo is trained: ``(N, 1, 32, 32)``, labels."""
    images, labels = load_idx("fashion-mnist", split, root=root)
    return zoo.preprocess(images), labels


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random integer shifts of up to ``max_shift`` pixels, filled with the background."""
    background = -zoo.MEAN / zoo.STD
    pad = F.pad(x, (max_shift,) * 4, value=background)
    offs = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=gen)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offs.tolist())])


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500, device: Any = "cpu"
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(-1) == yb).sum().item()
    model.train(was_training)
    return correct / len(x), loss / len(x)


def test_subset(n_total: int, n: int, seed: int = 0) -> torch.Tensor:
    """The fixed seeded subset of ``n`` test indices on which zoo accuracy is measured."""
    if not 0 < n <= n_total:
        raise ValueError(f"n_test must be in 1..{n_total}, got {n}")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, *, batch_size: int = 200,
                          device: Any = "cpu") -> int:
    """Re-estimate BatchNorm running statistics on ``x`` as exact (cumulative) averages.

    ``running_mean = mean over batches of E_batch[h]`` (likewise the variance), computed in
    training mode with ``momentum=None``; parameters do not change. Returns the number of
    BatchNorm layers (0: nothing to do). The model is left in eval mode.
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


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def train_model(
    entry: zoo.ZooEntry | str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    scale: str = "mini",
    config: TrainConfig = TrainConfig(),
    n_train: int | None = None,
    epochs: int | None = None,
    device: Any = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one zoo model with the shared recipe; return it (eval mode) and its record.

    Args:
        entry: a zoo entry or its name.
        train: preprocessed training images ``(N, 1, 32, 32)`` and labels.
        test: preprocessed test images and labels (accuracy is measured on all of them).
        scale: ``"mini"`` (CPU) or ``"full"`` (paper-scale architecture and budget).
        n_train, epochs: override the entry's budget.
    """
    from tqdm.auto import tqdm

    entry = zoo.get_entry(entry) if isinstance(entry, str) else entry
    if config.augment not in ("none", "shift"):
        raise ValueError(f"unknown augment {config.augment!r}; use 'none' or 'shift'")
    budget = entry.budget_for(scale)
    n_train = budget.n_train if n_train is None else n_train
    epochs = budget.epochs if epochs is None else epochs
    x_all, y_all = train
    if not 0 < n_train <= len(x_all):
        raise ValueError(f"n_train must be in 1..{len(x_all)}, got {n_train}")
    gen = torch.Generator().manual_seed(config.seed)
    idx = torch.randperm(len(x_all), generator=gen)[:n_train]
    x_tr, y_tr = x_all[idx], y_all[idx]

    model = zoo.create(entry, scale=scale, seed=config.seed).to(device)
    lr = config.lr if config.lr is not None else entry.lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total = steps_per_epoch * epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    warmup = max(1, round(config.warmup_frac * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, warmup))

    model.train()
    start = time.perf_counter()
    step, running = 0, float("nan")
    bar = tqdm(total=total, desc=f"train {entry.name}", disable=not progress, mininterval=5)
    for epoch in range(epochs):
        order = torch.randperm(n_train, generator=gen)
        for i in range(0, n_train, config.batch_size):
            if step >= total:
                break
            b = order[i : i + config.batch_size]
            xb, yb = x_tr[b], y_tr[b]
            if config.augment == "shift":
                xb = _shift(xb, gen)
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            step += 1
            running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{running:.3f}", refresh=False)
    bar.close()
    n_bn = recalibrate_batchnorm(model, x_tr[:BN_RECALIBRATION_IMAGES], device=device)
    train_time = time.perf_counter() - start
    start = time.perf_counter()
    acc, test_loss = evaluate(model, *test, device=device)
    eval_time = time.perf_counter() - start
    model.eval()
    record = {
        "name": entry.name,
        "arch": entry.arch,
        "family": entry.family,
        "scale": scale,
        "budget": _budget_name(entry, scale, n_train, epochs),
        "n_train": n_train,
        "epochs": epochs,
        "steps": step,
        "params": sum(p.numel() for p in model.parameters()),
        "test_acc": acc,
        "test_loss": test_loss,
        "train_loss_final": running,
        "train_time_s": round(train_time, 1),
        "eval_time_s": round(eval_time, 1),
        "n_test": len(test[0]),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "model_kwargs": json.dumps(entry.model_kwargs(scale), sort_keys=True),
        **{f"recipe_{k}": v for k, v in asdict(config).items() if k != "max_steps"},
        "recipe_lr": lr,
        "recipe_max_steps": config.max_steps,
        "recipe_bn_recalibration": min(n_train, BN_RECALIBRATION_IMAGES) if n_bn else 0,
    }
    return model, record


def _save_checkpoint(path: Path, model: nn.Module, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"model": state, "record": record}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _budget_name(entry: zoo.ZooEntry, scale: str, n_train: int, epochs: int) -> str:
    budget = entry.budget_for(scale)
    return budget.name if (n_train, epochs) == (budget.n_train, budget.epochs) else "custom"


def _train_subset(train: tuple[torch.Tensor, torch.Tensor], n_train: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return train[0][torch.randperm(len(train[0]), generator=gen)[:n_train]]


def _refresh_record(ckpt: Path, rpath: Path, train: Any, test: Any, n_test: int, *, scale: str,
                    command: str) -> None:
    """Bring an existing checkpoint's record up to date without retraining.

    Re-measures accuracy when ``n_test`` changed, and applies the BatchNorm
    re-estimation of the recipe to a checkpoint made before it was part of the recipe
    (same seeded training subset; the checkpoint is rewritten).
    """
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    record = dict(state["record"])
    entry = zoo.get_entry(record["name"])
    budget = _budget_name(entry, scale, record["n_train"], record["epochs"])
    if rpath.is_file():
        kept = read_json(rpath)["record"]
        if (kept.get("n_test") == n_test and kept.get("budget") == budget
                and "recipe_bn_recalibration" in kept):
            return
    record["budget"] = budget
    model, _ = zoo.load_trained(record["name"], scale=scale, root=ckpt.parent)
    if "recipe_bn_recalibration" not in record:
        x_tr = _train_subset(train, record["n_train"], record["recipe_seed"])
        n_bn = recalibrate_batchnorm(model, x_tr[:BN_RECALIBRATION_IMAGES])
        record["recipe_bn_recalibration"] = (
            min(record["n_train"], BN_RECALIBRATION_IMAGES) if n_bn else 0)
        record["n_test"] = None
    if record.get("n_test") != n_test:
        start = time.perf_counter()
        record["test_acc"], record["test_loss"] = evaluate(model, *test)
        record["eval_time_s"] = round(time.perf_counter() - start, 1)
        record["n_test"] = n_test
    _save_checkpoint(ckpt, model, record)
    meta = metadata(command=command, seed=record["recipe_seed"], device=record["device"],
                    checkpoint=str(ckpt))
    write_json(rpath, {"record": record, "metadata": meta})


def _record_path(results: Path, name: str) -> Path:
    return results / "models" / f"{name}.json"


def accuracy_table(results: str | os.PathLike = RESULTS_DIR) -> pd.DataFrame:
    """All per-model training records under ``results/models/`` as one table, zoo order."""
    folder = Path(results) / "models"
    order = {n: i for i, n in enumerate(zoo.zoo_names())}
    rows = [read_json(p)["record"] for p in sorted(folder.glob("*.json"))]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("name", key=lambda s: s.map(order)).reset_index(drop=True)


def train_zoo(
    names: list[str] | None = None,
    *,
    scale: str = "mini",
    config: TrainConfig = TrainConfig(),
    n_train: int | None = None,
    epochs: int | None = None,
    device: Any = "cpu",
    cache: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    force: bool = False,
    data_root: str | os.PathLike | None = None,
    n_test: int = 2000,
    progress: bool = True,
    command: str | None = None,
) -> pd.DataFrame:
    """Train the zoo (or ``names``), skipping models whose checkpoint exists.

    After each model, its checkpoint is written atomically, then its record to
    ``<results>/models/<name>.json`` and the whole table to ``<results>/accuracy.csv``.
    A checkpoint without a record (a run stopped in between) gets its record back from
    the checkpoint.

    Returns:
        The accuracy table of every model with a record.
    """
    from tqdm.auto import tqdm

    names = zoo.zoo_names() if names is None else list(names)
    entries = [zoo.get_entry(n) for n in names]
    results = Path(results) if results is not None else (
        RESULTS_DIR if scale == "mini" else RESULTS_DIR.with_name(f"zoo-{scale}")
    )
    command = command if command is not None else shlex.join(["python", "-m", "lielib.book.train", *sys.argv[1:]])
    train = test = None
    for entry in tqdm(entries, desc="zoo", disable=not progress):
        ckpt = zoo.checkpoint_path(entry.name, scale=scale, root=cache)
        rpath = _record_path(results, entry.name)
        if train is None:
            train, test = fashion_mnist("train", root=data_root), fashion_mnist("test", root=data_root)
            keep = test_subset(len(test[0]), n_test)
            test = (test[0][keep], test[1][keep])
        if ckpt.is_file() and not force:
            _refresh_record(ckpt, rpath, train, test, n_test, scale=scale, command=command)
            continue
        model, record = train_model(
            entry, train, test, scale=scale, config=config, n_train=n_train, epochs=epochs,
            device=device, progress=progress,
        )
        _save_checkpoint(ckpt, model, record)
        meta = metadata(command=command, seed=config.seed, device=device, checkpoint=str(ckpt))
        write_json(rpath, {"record": record, "metadata": meta})
        if progress:
            tqdm.write(f"{entry.name}: test accuracy {record['test_acc']:.4f} "
                       f"({record['train_time_s']:.0f} s, {record['params']:,} parameters)")
    table = accuracy_table(results)
    if not table.empty:
        meta = metadata(command=command, seed=config.seed, device=device,
                        models=table["name"].tolist(), recipe=asdict(config), scale=scale,
                        note="one row per model; per-model records with metadata in models/")
        write_table(results / "accuracy.csv", table, meta)
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m lielib.book.train --zoo [--only NAME ...] [--scale mini|full] ...``."""
    p = argparse.ArgumentParser(prog="python -m lielib.book.train", description=__doc__.split("\n")[0])
    p.add_argument("--zoo", action="store_true", help="train the mini-zoo (required)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="train only these zoo models")
    p.add_argument("--scale", choices=("mini", "full"), default="mini",
                   help="mini: CPU architectures and budgets; full: paper-scale (use a GPU)")
    p.add_argument("--n-train", type=int, help="override every model's number of training images")
    p.add_argument("--epochs", type=int, help="override every model's number of epochs")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, help="override every model's peak learning rate")
    p.add_argument("--augment", choices=("none", "shift"), default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=2000, help="test images for accuracy (max 10000)")
    p.add_argument("--max-steps", type=int, help="stop each model after this many steps (smoke runs)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache", help="checkpoint folder (default $LIELIB_CACHE/zoo or cache/zoo)")
    p.add_argument("--results", help="results folder (default results/zoo)")
    p.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.zoo:
        p.error("nothing to train: pass --zoo (optionally with --only NAME ...)")
    torch.set_num_threads(args.threads)
    config = TrainConfig(batch_size=args.batch_size, lr=args.lr, augment=args.augment,
                         seed=args.seed, max_steps=args.max_steps)
    try:
        table = train_zoo(args.only, scale=args.scale, config=config, n_train=args.n_train,
                          epochs=args.epochs, device=args.device, cache=args.cache,
                          results=args.results, force=args.force, n_test=args.n_test, progress=not args.no_progress)
    except KeyError as err:
        p.error(str(err.args[0]))
    if not table.empty:
        print(table[["name", "family", "budget", "params", "test_acc", "train_time_s"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
