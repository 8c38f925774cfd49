"""Command line: ``python -m lielib.book.rotated_mnist [--preset full|cpu|paper|smoke] [--jobs 2] ...``.

Rerunning the same command resumes from the last finished epoch of every stage.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import torch

from ..paths import ROOT
from .config import PRESETS, ExperimentConfig, preset
from .run import command_for, run_experiment

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lielib.book.rotated_mnist",
        description="Pretrain a small MAE ViT on upright MNIST, fine-tune it, the same ViT from "
        "scratch and a CNN (each with and without rotation augmentation) on rotated MNIST, and "
        "measure accuracy and Lie derivatives after every epoch. Resumable: rerun to continue.")
    p.add_argument("--preset", choices=list(PRESETS), default="full",
                   help="full: the book's run (default); cpu: about 5 min on one thread; "
                   "paper: 100 epochs on a GPU; smoke: seconds")
    for f in fields(ExperimentConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "variants":
            p.add_argument(flag, nargs="+", default=None,
                           help="mae, scratch, cnn; '+rot' adds rotation augmentation, '+up' fine-tunes "
                           "on the same digits upright (e.g. mae+up)")
        else:
            p.add_argument(flag, type=type(f.default), default=None)
    p.add_argument("--out", default=None, help="results folder (default results/rotated_mnist/<preset>)")
    p.add_argument("--cache", default=None,
                   help="checkpoint folder (default <cache>/rotated_mnist/<config fingerprint>)")
    p.add_argument("--jobs", type=int, default=1, help="variants trained in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    return p


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse ``argv``, build the config and run (or resume) the experiment."""
    args = _parser().parse_args(argv)
    try:
        cfg = preset(args.preset, **{f.name: getattr(args, f.name) for f in fields(ExperimentConfig)})
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("this preset needs a CUDA device and none is available; add --device cpu")
    out = Path(args.out) if args.out else ROOT / "results" / "rotated_mnist" / args.preset
    out = out if out.is_absolute() else Path.cwd() / out
    return run_experiment(cfg, out, cache=args.cache, jobs=args.jobs, threads=args.threads,
                          command=command_for(cfg, out, args.preset), progress=args.progress)


if __name__ == "__main__":
    main()
