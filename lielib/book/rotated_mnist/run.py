"""The rotated-MNIST experiment end to end: train, measure every epoch, write ``results/``.

:func:`run_experiment` pretrains the MAE, fine-tunes every variant
(:mod:`~lielib.book.rotated_mnist.train`), measures every stored epoch with every metric of
:data:`~lielib.book.rotated_mnist.measure.METRICS` (per-image values cached beside the
weights, so a new metric needs no retraining), and writes under ``out_dir``, each file with
its ``.meta.json``:

* ``pretraining.csv``: MAE loss per epoch beside the zero-prediction reference;
  ``mae_examples.npz``: masked input, reconstruction and original of unseen digits;
* ``epochs.csv``: per variant and epoch, training loss and test accuracy (every variant,
  the upright ``+up`` ones included, is scored and measured on rotated test digits);
* ``final.csv``: per variant, accuracy on ``final_eval_size`` test digits and the gain over
  the last five epochs (a plateau check);
* ``per_image.csv`` (variant, epoch, image, action, one column per metric: ``lee``) and
  ``summary.csv`` (variant, epoch, action, n, per metric its mean and 95% bootstrap
  interval: ``lee, lee_low, lee_high``); ``ratios.csv`` and ``contrasts.csv``: rotation
  against translation, per epoch and in paired comparisons, one ``metric`` column
  (:mod:`~lielib.book.rotated_mnist.measure`).

With ``jobs > 1`` variants train in parallel processes (the MAE variants once pretraining
is done); tables are rewritten whenever a variant finishes, so partial results show progress.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..paths import ROOT, cache_dir
from ..results import atomic_path, meta_path, metadata, write_json, write_table
from ..training import load_checkpoint
from .config import ExperimentConfig, parse_variant
from .data import ROTATED_MNIST_SIZES, load_rotated_mnist, load_upright_digits
from .mae import reconstruct
from .measure import METRICS, contrasts, ratios, summarise
from .train import build_mae, classifier, pretrain, train_variant

__all__ = ["collect", "default_cache", "measure_variant", "run_experiment"]


def default_cache(cfg: ExperimentConfig) -> Path:
    """``cache_dir("rotated_mnist", <fingerprint>)``: weights and per-image values of this config."""
    return cache_dir("rotated_mnist", cfg.fingerprint())


def measure_variant(cfg: ExperimentConfig, variant: str, folder: Path, *, log=print) -> None:
    """Measure every stored epoch of ``variant`` with every metric it lacks (cached per epoch).

    ``folder/<variant>/<metric>/epoch_XXX.csv``: one row per image of the first
    ``cfg.lee_size`` rotated test digits, one column per action.
    """
    dev = torch.device(cfg.device)
    x = load_rotated_mnist("test", seed=cfg.seed, size=cfg.lee_size).images.to(dev)
    model = classifier(cfg, variant, folder) if parse_variant(variant)[0] != "mae" else None
    for ckpt in sorted((folder / variant).glob("epoch_*.pt")):
        for metric, fn in METRICS.items():
            out = folder / variant / metric / f"{ckpt.stem}.csv"
            if out.is_file() and len(pd.read_csv(out)) == cfg.lee_size:
                continue
            if model is None:  # the MAE variant's architecture is the ViT's
                model = classifier(cfg, "scratch", folder)
            model.load_state_dict(load_checkpoint(ckpt)["model"])
            t = time.perf_counter()
            frame = fn(model.to(dev), x)
            with atomic_path(out) as tmp:
                frame.to_csv(tmp)
            log(f"{variant} {ckpt.stem}: {metric} measured ({time.perf_counter() - t:.0f} s)")


def _per_image(cfg: ExperimentConfig, folder: Path, variant: str, metric: str) -> pd.DataFrame:
    frames = []
    for path in sorted((folder / variant / metric).glob("epoch_*.csv")):
        wide = pd.read_csv(path, index_col="image")
        if len(wide) != cfg.lee_size:
            continue
        long = wide.reset_index().melt(id_vars="image", var_name="action", value_name=metric)
        frames.append(long.assign(variant=variant, epoch=int(path.stem.split("_")[1])))
    if not frames:
        return pd.DataFrame(columns=["variant", "epoch", "image", "action", metric])
    return pd.concat(frames, ignore_index=True)[["variant", "epoch", "image", "action", metric]]


def _examples(cfg: ExperimentConfig, folder: Path, out: Path, meta: dict) -> Path:
    mae = build_mae(cfg)
    mae.load_state_dict(load_checkpoint(folder / "pretrain" / "state.pt")["mae"])
    digits = load_upright_digits("test", seed=cfg.seed, size=8)
    arrays = {k: v.numpy() for k, v in reconstruct(mae, digits, torch.Generator().manual_seed(cfg.seed)).items()}
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    write_json(meta_path(out), {**meta, "arrays": {k: list(v.shape) for k, v in arrays.items()},
                                "digits": "the first 8 test-split digits, upright (unseen in pretraining)"})
    return out


def collect(cfg: ExperimentConfig, folder: Path, out_dir: Path, *, command: str,
            seconds: dict | None = None) -> dict[str, Path]:
    """Write the results tables from what ``folder`` holds now (finished or not)."""
    paths: dict[str, Path] = {}
    done, epochs, finals = [], [], []
    for v in cfg.variants:
        path = folder / v / "state.pt"
        if not path.is_file():
            continue
        state = load_checkpoint(path)
        base, rotate, upright = parse_variant(v)
        info = {"variant": v, "model": "cnn" if base == "cnn" else "vit", "pretrained": base == "mae",
                "rotation_augmentation": rotate, "upright_training": upright}
        epochs += [{**info, **r} for r in state["rows"]]
        if "final" in state:
            done.append(v)
            rows = pd.DataFrame(state["rows"]).set_index("epoch")["test_accuracy"]
            gain = float(rows.iloc[-5:].max() - rows.iloc[-10:-5].max()) if len(rows) > 10 else float("nan")
            finals.append({**info, **state["final"], "epochs": int(state["epoch"]),
                           "accuracy_gain_last5": gain, "train_seconds": float(sum(r["seconds"] for r in state["rows"]))})
    meta = metadata(command=command, seed=cfg.seed, device=cfg.device, config=asdict(cfg),
                    fingerprint=cfg.fingerprint(), finished_variants=done, seconds=seconds or {},
                    threads=torch.get_num_threads(),
                    sizes={"full_splits": ROTATED_MNIST_SIZES, "lee": cfg.lee_size},
                    dataset="rotated MNIST rebuilt by lielib.book.rotated_mnist.data (not the original files)")
    mae_state = folder / "pretrain" / "state.pt"
    if cfg.uses_mae and mae_state.is_file():
        rows = pd.DataFrame(load_checkpoint(mae_state)["rows"])
        rows["loss_over_reference"] = rows["loss"] / rows["zero_reference"]
        paths["pretraining"] = write_table(out_dir / "pretraining.csv", rows, meta)
        paths["mae_examples"] = _examples(cfg, folder, out_dir / "mae_examples.npz", meta)
    if epochs:
        paths["epochs"] = write_table(out_dir / "epochs.csv", pd.DataFrame(epochs), meta)
    if finals:
        paths["final"] = write_table(out_dir / "final.csv", pd.DataFrame(finals), meta)
    keys = ["variant", "epoch", "image", "action"]
    per_image = None
    for metric in METRICS:
        part = pd.concat([_per_image(cfg, folder, v, metric) for v in cfg.variants], ignore_index=True)
        part[metric] = part[metric].astype(float).map(lambda v: float(f"{v:.6g}"))
        per_image = part if per_image is None else per_image.merge(part, on=keys, how="outer")
    if per_image is not None and not per_image.empty:
        kw = {"n_resamples": cfg.n_resamples, "seed": cfg.seed}
        paths["per_image"] = write_table(out_dir / "per_image.csv", per_image, meta)
        summary = None
        for metric in METRICS:
            part = summarise(per_image.dropna(subset=[metric]), metric, **kw)
            summary = part if summary is None else summary.merge(
                part, on=["variant", "epoch", "action", "n"], how="outer")
        paths["summary"] = write_table(out_dir / "summary.csv", summary, meta)
        paths["ratios"] = write_table(out_dir / "ratios.csv", pd.concat(
            [ratios(per_image.dropna(subset=[m]), m, **kw) for m in METRICS], ignore_index=True), meta)
        paths["contrasts"] = write_table(out_dir / "contrasts.csv", pd.concat(
            [contrasts(per_image.dropna(subset=[m]), m, **kw) for m in METRICS], ignore_index=True), meta)
    return paths


def _work(task: str, cfg: ExperimentConfig, folder: Path, threads: int, progress: bool) -> str:
    """One unit of work in its own process: ``"mae"`` pretraining, or a variant's training and measuring."""
    torch.set_num_threads(threads)
    if task == "pretrain":
        pretrain(cfg, folder, progress=progress)
    else:
        train_variant(cfg, task, folder, progress=progress)
        measure_variant(cfg, task, folder)
    return task


def command_for(cfg: ExperimentConfig, out_dir: Path, preset: str | None = None) -> str:
    """The command line that reproduces ``cfg`` into ``out_dir``."""
    args = ["python", "-m", "lielib.book.rotated_mnist", *cfg.cli_args()]
    if preset is not None:
        args[3:3] = ["--preset", preset]
    out = Path(out_dir).resolve()
    return shlex.join([*args, "--out", str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)])


def run_experiment(cfg: ExperimentConfig, out_dir: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                   jobs: int = 1, threads: int = 1, command: str | None = None, progress: bool = False,
                   log=print) -> dict[str, Path]:
    """Train (resuming), measure and write every results table; see the module docstring.

    Args:
        jobs: processes that train variants in parallel (1: all in this process).
        threads: torch threads per process.
        command: recorded in the metadata; defaults to :func:`command_for`.
    """
    out_dir = Path(out_dir)
    folder = Path(cache) if cache is not None else default_cache(cfg)
    command = command or command_for(cfg, out_dir)
    t0, seconds = time.perf_counter(), {}
    log(f"rotated MNIST: checkpoints in {folder}, results in {out_dir}")
    tasks = (["pretrain"] if cfg.uses_mae else []) + list(cfg.variants)
    if jobs <= 1:
        torch.set_num_threads(threads)
        for task in tasks:
            _work(task, cfg, folder, threads, progress)
            seconds[task] = time.perf_counter() - t0
            collect(cfg, folder, out_dir, command=command, seconds=seconds)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            waiting = [t for t in tasks if t != "pretrain" and parse_variant(t)[0] == "mae"]
            running = {pool.submit(_work, t, cfg, folder, threads, progress)
                       for t in tasks if t not in waiting}
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = fut.result()
                    seconds[task] = time.perf_counter() - t0
                    if task == "pretrain":
                        running |= {pool.submit(_work, t, cfg, folder, threads, progress) for t in waiting}
                    collect(cfg, folder, out_dir, command=command, seconds=seconds)
    seconds["total"] = time.perf_counter() - t0
    paths = collect(cfg, folder, out_dir, command=command, seconds=seconds)
    log(f"done in {seconds['total']:.0f} s: {', '.join(sorted(paths))}")
    return paths
