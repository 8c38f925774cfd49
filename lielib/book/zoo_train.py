"""Training the Fashion-MNIST zoo (:mod:`lielib.book.zoo`) with one recipe, resumable per model.

The recipe, the same for every model (no per-model exception):

- data: a seeded nested subset of ``n_train`` training images (the 2k subset is a prefix of
  the 8k one, which is a prefix of the full permuted set); with ``augment="shift"`` every
  image is shifted by a random integer offset of up to 2 px, filled with the background;
- AdamW, peak learning rate 1e-3, weight decay 0.05, batch 64, gradient norm clipped at 1;
- :data:`lielib.book.zoo.STEPS` steps, linear warm-up over the first 5%, cosine decay to 0;
- snapshots at :data:`lielib.book.zoo.SNAPSHOT_STEPS`: BatchNorm statistics re-estimated
  on 2,048 of the model's training images (exact averages, no parameter change), then test
  accuracy (a fixed seeded 2,000-image subset; all 10,000 images for the trained model);
- converged, when the loss at initialisation is within 5% of ln 10, the mean training loss
  of the last 10% of steps is at most half of ln 10, and it fell from the 10% of steps
  before by at most 10% of that loss plus 1% of ln 10: a curve that falls and flattens (``merge`` applies the
  criterion to every stored curve, so the tables follow the code).

Outputs: a checkpoint per snapshot in the cache (``<cache>/zoo/<name>/``), and per model
``results/zoo/models/<name>.json`` (record, loss curve, snapshots, metadata), written
atomically once the model is done. ``merge`` (run after training, or on its own) collects
them into ``results/zoo/{accuracy,curves,snapshots}.csv``. Several workers can train at
once: each model is claimed with a file lock, which a dead process releases::

    python -m lielib.book.zoo_train --workers 2          # the whole zoo, about 2 h here
    python -m lielib.book.zoo_train --only vit-small     # one model
    python -m lielib.book.zoo_train merge                # the tables from what is done
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from . import training, zoo
from .paths import ROOT
from .results import OutputPathError, check_output, metadata, read_json, write_json, write_table
from .training import accuracy, fit, recalibrate_batchnorm, save_checkpoint

__all__ = ["RECIPE", "RESULTS_DIR", "batches", "fashion_mnist", "init_loss", "main", "merge",
           "run_folders", "snapshot_steps", "train_entry", "train_subset", "train_zoo"]

RESULTS_DIR = ROOT / "results" / "zoo"
RECIPE: dict[str, Any] = {
    "optimizer": "AdamW", "lr": 1e-3, "weight_decay": 0.05, "batch_size": zoo.BATCH_SIZE,
    "steps": zoo.STEPS, "warmup_frac": 0.05, "grad_clip": 1.0, "max_shift": 2,
    "head_init": f"trunc_normal(std={zoo.HEAD_STD}), bias 0", "bn_images": 2048,
    "n_test_snapshot": 2000,
}
"""The one recipe; every record stores it, and a changed recipe retrains (``--force``)."""
CONVERGENCE = {"init_loss_tol": 0.05, "final_loss_frac": 0.5, "flat_rtol": 0.10,
               "flat_atol": 0.01}


def fashion_mnist(split: str, *, root: str | os.PathLike | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` preprocessed as the zoo is trained: ``(N, 1, 32, 32)``, labels."""
    from .data import load_idx

    images, labels = load_idx("fashion-mnist", split, root=root)
    return zoo.preprocess(images), labels


def train_subset(n_total: int, n_train: int, seed: int) -> torch.Tensor:
    """The first ``n_train`` of a seeded permutation of ``n_total`` (nested across sizes)."""
    if not 0 < n_train <= n_total:
        raise ValueError(f"n_train must be in 1..{n_total}, got {n_train}")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n_train]


def test_subset(n_total: int, n: int, seed: int = 0) -> torch.Tensor:
    """A fixed seeded subset of ``n`` test indices, sorted (nested across ``n``)."""
    if not 0 < n <= n_total:
        raise ValueError(f"n_test must be in 1..{n_total}, got {n}")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    background = -zoo.MEAN / zoo.STD
    pad = F.pad(x, (max_shift,) * 4, value=background)
    offs = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=gen)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offs.tolist())])


def batches(x: torch.Tensor, y: torch.Tensor, *, batch_size: int, gen: torch.Generator,
            augment: str = "none", max_shift: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The zoo's batches (:func:`lielib.book.training.batches`), shifted when ``augment="shift"``."""
    if augment not in ("none", "shift"):
        raise ValueError(f"unknown augment {augment!r}; use 'none' or 'shift'")
    shift = None if augment == "none" else (lambda xb, g: _shift(xb, g, max_shift))
    return training.batches(x, y, batch_size=batch_size, gen=gen, augment=shift)


def snapshot_steps(steps: int) -> tuple[int, ...]:
    """The snapshot steps for a run of ``steps``: 0, 5%, 20%, 50% and 100% of it."""
    if steps == zoo.STEPS:
        return zoo.SNAPSHOT_STEPS
    return tuple(sorted({0, *(max(1, round(f * steps)) for f in (0.05, 0.2, 0.5)), steps}))


@torch.no_grad()
def init_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Training-mode cross-entropy of an untrained model on ``(x, y)`` (BatchNorm untouched)."""
    state = copy.deepcopy(model.state_dict())
    model.train()
    loss = F.cross_entropy(model(x), y).item()
    model.load_state_dict(state)
    return loss


def _converged(curve: list[dict[str, float]], loss0: float, steps: int) -> dict[str, Any]:
    frame = pd.DataFrame(curve)
    window = max(1, round(0.1 * steps))
    last = frame[frame["step"] > steps - window]["loss"].mean()
    before = frame[(frame["step"] > steps - 2 * window) & (frame["step"] <= steps - window)]["loss"].mean()
    ln_c = math.log(10)
    init_ok = abs(loss0 - ln_c) <= CONVERGENCE["init_loss_tol"] * ln_c
    low = last <= CONVERGENCE["final_loss_frac"] * ln_c
    # flat, as numpy.isclose reads closeness: the last window's decrease is within a relative
    # tolerance of the loss before it plus an absolute one on the scale of ln C (a relative
    # test alone calls a curve at 1e-3 still falling)
    flat = bool(before - last <= CONVERGENCE["flat_rtol"] * before + CONVERGENCE["flat_atol"] * ln_c)
    return {"init_loss_ok": init_ok, "final_train_loss": float(last),
            "final_loss_drop": float((before - last) / before) if before > 0 else math.nan,
            "converged": bool(init_ok and low and flat)}


def train_entry(entry: zoo.ZooEntry | str, train: tuple[torch.Tensor, torch.Tensor],
                test: tuple[torch.Tensor, torch.Tensor], *, seed: int = 0,
                steps: int = zoo.STEPS, cache: str | os.PathLike | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Train one zoo model with the recipe; keep its snapshots; return its results.

    Args:
        train: the full preprocessed training set (the entry's subset is taken from it).
        test: the full preprocessed test set (all of it scores the trained model).
        steps: the run's length (:data:`lielib.book.zoo.STEPS`; fewer for smoke runs).

    Returns:
        ``{"record": {...}, "curve": [...], "snapshots": [...]}``.
    """
    entry = zoo.get_entry(entry) if isinstance(entry, str) else entry
    folder = Path(cache) if cache is not None else zoo.cache_dir()
    recipe = {**RECIPE, "steps": steps, "seed": seed}
    idx = train_subset(len(train[0]), entry.n_train, seed)
    x_tr, y_tr = train[0][idx], train[1][idx]
    sub = test_subset(len(test[0]), min(RECIPE["n_test_snapshot"], len(test[0])))
    gen = torch.Generator().manual_seed(seed)
    model = zoo.create(entry, seed=seed)
    loss0 = init_loss(model, x_tr[:512], y_tr[:512])
    base = {"name": entry.name, "arch": entry.arch, "family": entry.family, "kind": entry.kind,
            "size": entry.size, "n_train": entry.n_train, "augment": entry.augment,
            "condition": entry.condition, "seed": seed,
            "params": sum(p.numel() for p in model.parameters()),
            "model_kwargs": json.dumps(entry.model_kwargs(), sort_keys=True),
            **{f"recipe_{k}": v for k, v in recipe.items()}}
    snaps: list[dict[str, Any]] = []
    keep = snapshot_steps(steps)

    def snapshot(step: int) -> None:
        if step not in keep:
            return
        snap = copy.deepcopy(model)
        n_bn = recalibrate_batchnorm(snap, x_tr[: RECIPE["bn_images"]])
        final = step == steps
        xs, ys = test if final else (test[0][sub], test[1][sub])
        acc, loss = accuracy(snap, xs, ys)
        snaps.append({"step": step, "test_acc": acc, "test_loss": loss, "n_test": len(xs),
                      "bn_layers": n_bn})
        name = "final.pt" if final else f"step{step:04d}.pt"
        save_checkpoint(folder / entry.name / name,
                        {"model": snap.state_dict(),
                         "record": {**base, "step": step, "test_acc": acc, "n_test": len(xs)}})

    start = time.perf_counter()
    snapshot(0)
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"],
                            weight_decay=RECIPE["weight_decay"])
    curve = fit(model, batches(x_tr, y_tr, batch_size=RECIPE["batch_size"], gen=gen,
                               augment=entry.augment, max_shift=RECIPE["max_shift"]),
                lambda m, b: F.cross_entropy(m(b[0]), b[1]), opt, steps=steps,
                warmup=max(1, round(RECIPE["warmup_frac"] * steps)),
                grad_clip=RECIPE["grad_clip"], on_step=snapshot, desc=entry.name,
                progress=progress)
    final = snaps[-1]
    record = {**base, "steps": steps, "init_loss": loss0, **_converged(curve, loss0, steps),
              "test_acc": final["test_acc"], "test_loss": final["test_loss"],
              "n_test": final["n_test"], "train_time_s": round(time.perf_counter() - start, 1),
              "torch_threads": torch.get_num_threads()}
    return {"record": record, "curve": curve, "snapshots": snaps}


@contextlib.contextmanager
def _claim(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking file lock (released when the holder exits or dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _done(rpath: Path, folder: Path, name: str, recipe: dict[str, Any], force: bool) -> bool:
    if force or not rpath.is_file() or not (folder / name / "final.pt").is_file():
        return False
    kept = read_json(rpath)["record"]
    changed = {k: (kept.get(f"recipe_{k}"), v) for k, v in recipe.items()
               if kept.get(f"recipe_{k}") != v}
    if changed:
        raise ValueError(f"{name} was trained with another recipe ({changed}: kept, asked); "
                         "pass --force to retrain it, or --results/--cache for a separate run")
    return True


RUN_FILE = zoo.RUN_FILE


def _restore(folder: Path, recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The cached results of a finished run with the same recipe, or ``None``."""
    run, final = folder / RUN_FILE, folder / "final.pt"
    if not (run.is_file() and final.is_file()):
        return None
    kept = read_json(run)
    same = all(kept["record"].get(f"recipe_{k}") == v for k, v in recipe.items())
    return kept if same else None


def run_folders(seed: int = 0, passes: float | None = None) -> tuple[Path, Path]:
    """The results folder and the checkpoint folder of a zoo run (:func:`lielib.book.zoo.run_tag`).

    The zoo itself (seed 0, equal steps) lives in ``results/zoo`` and ``<cache>/zoo``; any
    other run in ``results/zoo/runs/<tag>`` and ``<cache>/zoo/runs/<tag>``.
    """
    tag = zoo.run_tag(seed, passes)
    if not tag:
        return RESULTS_DIR, zoo.cache_dir()
    return RESULTS_DIR / "runs" / tag, zoo.cache_dir() / "runs" / tag


def train_zoo(names: list[str] | None = None, *, seed: int = 0, steps: int = zoo.STEPS,
              passes: float | None = None,
              cache: str | os.PathLike | None = None, results: str | os.PathLike | None = None,
              data_root: str | os.PathLike | None = None, force: bool = False,
              progress: bool = True, command: str | None = None) -> list[str]:
    """Train every model of ``names`` that is not done and not claimed by another worker.

    ``passes`` replaces the equal-steps budget by an equal number of passes over each
    model's training set (:func:`lielib.book.zoo.steps_for_passes`); ``cache`` and
    ``results`` default to the run's folders (:func:`run_folders`).

    A model is done when its results file and its final checkpoint exist with the same
    recipe; when only the cache holds it (results file lost), the results file is restored
    from the cache's copy without retraining. Returns the names this call trained.
    """
    names = zoo.zoo_names() if names is None else [zoo.get_entry(n).name for n in names]
    default_results, default_cache = run_folders(seed, passes)
    folder = Path(cache) if cache is not None else default_cache
    results = Path(results) if results is not None else default_results
    command = command or shlex.join(["python", "-m", "lielib.book.zoo_train", *sys.argv[1:]])
    started = time.time()
    data: tuple | None = None
    trained = []
    for name in names:
        n_steps = steps if passes is None else zoo.steps_for_passes(zoo.get_entry(name).n_train, passes)
        recipe = {**RECIPE, "steps": n_steps, "seed": seed}
        if passes is not None:
            recipe["passes"] = passes
        rpath = results / "models" / f"{name}.json"
        if _done(rpath, folder, name, recipe, force):
            continue
        with _claim(folder / name / ".claim") as mine:
            redone = force and rpath.is_file() and rpath.stat().st_mtime >= started
            if not mine or redone or (not force and _done(rpath, folder, name, recipe, False)):
                continue
            kept = _restore(folder / name, recipe) if not force else None
            if kept is not None:  # trained before, its results file lost: no retraining
                write_json(rpath, kept)
                print(f"{name}: results restored from {folder / name / RUN_FILE}", flush=True)
                continue
            if data is None:
                data = (fashion_mnist("train", root=data_root), fashion_mnist("test", root=data_root))
            out = train_entry(name, *data, seed=seed, steps=n_steps, cache=folder,
                              progress=progress)
            if passes is not None:
                out["record"]["recipe_passes"] = passes
            meta = metadata(command=command, seed=seed, device="cpu",
                            checkpoint=str(folder / name / "final.pt"))
            write_json(folder / name / RUN_FILE, {**out, "metadata": meta})
            write_json(rpath, {**out, "metadata": meta})
            trained.append(name)
            rec = out["record"]
            print(f"{name}: test accuracy {rec['test_acc']:.4f}, converged {rec['converged']}, "
                  f"{rec['train_time_s']:.0f} s", flush=True)
    return trained


def merge(results: str | os.PathLike | None = None, *, command: str | None = None
          ) -> pd.DataFrame:
    """Collect ``models/*.json`` into ``accuracy.csv``, ``curves.csv`` and ``snapshots.csv``."""
    results = Path(results) if results is not None else RESULTS_DIR
    order = {n: i for i, n in enumerate(zoo.zoo_names())}
    files = sorted((results / "models").glob("[!.]*.json"), key=lambda p: order.get(p.stem, 1e9))
    if not files:
        raise FileNotFoundError(f"no trained zoo models in {results / 'models'}; train first with "
                                "`python -m lielib.book.zoo_train`")
    runs = [read_json(p) for p in files]
    records = pd.DataFrame([{**r["record"], **_converged(r["curve"], r["record"]["init_loss"],
                                                          r["record"]["steps"])} for r in runs])
    curves = pd.DataFrame([{"model": r["record"]["name"], **c} for r in runs for c in r["curve"]])
    snaps = pd.DataFrame([{"model": r["record"]["name"], **s} for r in runs for s in r["snapshots"]])
    command = command or shlex.join(["python", "-m", "lielib.book.zoo_train", "merge"])
    with _claim(results / ".merge.lock"):
        for stem, table, note in (
            ("accuracy", records, ("one row per trained model: factors, recipe, accuracy on all "
                                  "10,000 test images, convergence")),
            ("curves", curves, "mean training loss of every 10 steps"),
            ("snapshots", snaps, ("test accuracy at each kept checkpoint (BatchNorm statistics "
                                 "re-estimated); n_test images")),
        ):
            meta = metadata(command=command, models=records["name"].tolist(),
                            recipe=RECIPE, convergence=CONVERGENCE, note=note)
            write_table(results / f"{stem}.csv", table, meta)
    return records


def _worker(kwargs: dict[str, Any]) -> list[str]:
    torch.set_num_threads(1)
    return train_zoo(**kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m lielib.book.zoo_train [merge] [--only NAME ...] [--workers N] ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "lielib.book.zoo_train", *argv])
    p = argparse.ArgumentParser(prog="python -m lielib.book.zoo_train",
                                description=__doc__.split("\n")[0])
    p.add_argument("action", nargs="?", choices=("train", "merge"), default="train")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these zoo models")
    p.add_argument("--workers", type=int, default=1, help="parallel processes, one thread each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=zoo.STEPS, help="steps per model (smoke runs)")
    p.add_argument("--passes", type=float, default=None,
                   help="train each model for this many passes over its own training set "
                        "instead of an equal number of steps (results/zoo/runs/passesP-seedK)")
    p.add_argument("--cache", help="checkpoint folder (default $LIELIB_CACHE/zoo or ~/.cache/lielib/zoo)")
    p.add_argument("--results", help="results folder (default results/zoo)")
    p.add_argument("--force", action="store_true", help="retrain models that are done")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.workers < 1 or args.steps < 1:
        p.error("--workers and --steps must be at least 1")
    if args.passes is not None and not args.passes > 0:
        p.error(f"--passes must be positive, got {args.passes}")
    if args.seed < 0:
        p.error(f"--seed must be a non-negative integer, got {args.seed}")
    try:
        names = [zoo.get_entry(n).name for n in args.only] if args.only else None
    except KeyError as err:
        p.error(str(err.args[0]))
    try:
        for flag, value in (("--cache", args.cache), ("--results", args.results)):
            if value is not None:
                check_output(value, flag)
    except OutputPathError as err:
        p.error(str(err))
    if args.action == "train":
        kwargs = {"names": names, "seed": args.seed, "steps": args.steps, "passes": args.passes,
                  "cache": args.cache,
                      "results": args.results, "force": args.force,
                      "progress": not args.no_progress, "command": command}
        try:
            if args.workers == 1:
                torch.set_num_threads(1)
                train_zoo(**kwargs)
            else:
                with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
                    for fut in [pool.submit(_worker, kwargs) for _ in range(args.workers)]:
                        fut.result()
        except ValueError as err:
            p.error(str(err))
    results = args.results or run_folders(args.seed, args.passes)[0]
    table = merge(results, command=command)
    cols = ["name", "condition", "params", "init_loss", "test_acc", "converged", "train_time_s"]
    print(table[cols].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
