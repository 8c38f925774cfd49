"""Command line: ``python -m lielib.book.rotated_mnist [--preset full|cpu|paper|smoke] [--jobs 2] ...``.

Rerunning the same command resumes from the last finished epoch of every stage. Every
argument is checked before anything is trained: the output folders, the ranges of the
settings, and that the configuration builds its models.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import torch

from ..paths import ROOT
from ..results import OutputPathError, check_output
from .config import PRESETS, ExperimentConfig, parse_variant, preset
from .run import command_for, run_experiment

__all__ = ["main"]

_AT_LEAST_ONE = ("embed_dim", "depth", "num_heads", "patch_size", "cnn_width", "decoder_dim",
                 "decoder_depth", "bn_size", "n_resamples")
_POSITIVE = ("lr", "mae_lr", "mlp_ratio")


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
                           help="mae, scratch, cnn; '+rot' adds rotation augmentation")
        else:
            p.add_argument(flag, type=type(f.default), default=None)
    p.add_argument("--out", default=None, help="results folder (default results/rotated_mnist/<preset>)")
    p.add_argument("--cache", default=None,
                   help="checkpoint folder (default <cache>/rotated_mnist/<config fingerprint>)")
    p.add_argument("--jobs", type=int, default=1, help="variants trained in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--progress", action="store_true", help="progress bars")
    return p


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_config(cfg: ExperimentConfig) -> None:
    """Raise ``ValueError`` naming the flag of a setting out of its range, or a configuration
    whose models cannot be built (checked by building them and running one blank digit)."""
    for name in _AT_LEAST_ONE:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{_flag(name)} must be at least 1, got {getattr(cfg, name)}")
    for name in _POSITIVE:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{_flag(name)} must be positive, got {getattr(cfg, name)}")
    if not 0 < cfg.mask_ratio < 1:
        raise ValueError(f"--mask-ratio is the share of patches the MAE hides, in (0, 1) (the "
                         f"book uses 0.5, the MAE paper 0.75), got {cfg.mask_ratio}")
    if not 0 < cfg.layer_decay <= 1:
        raise ValueError(f"--layer-decay must be in (0, 1], got {cfg.layer_decay}")
    if cfg.weight_decay < 0:
        raise ValueError(f"--weight-decay must be 0 or more, got {cfg.weight_decay}")
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise ValueError(f"--warmup-epochs must be between 0 and --epochs ({cfg.epochs}), got "
                         f"{cfg.warmup_epochs}")
    if cfg.seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {cfg.seed}")
    if cfg.embed_dim % cfg.num_heads:
        raise ValueError(f"--embed-dim {cfg.embed_dim} must be a multiple of --num-heads "
                         f"{cfg.num_heads}")
    from .models import build_model
    from .train import _arch, build_mae

    kinds = {parse_variant(v)[0] for v in cfg.variants}
    try:
        with torch.no_grad():
            if cfg.uses_mae:
                build_mae(cfg)
            for kind in {"cnn" if k == "cnn" else "vit" for k in kinds}:
                build_model(kind, seed=cfg.seed, **_arch(cfg)).eval()(torch.zeros(1, 1, 28, 28))
    except (ValueError, RuntimeError, AssertionError) as err:
        raise ValueError(f"these settings do not build the models: {err}") from None


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse ``argv``, check it, build the config and run (or resume) the experiment."""
    args = _parser().parse_args(argv)
    try:
        cfg = preset(args.preset, **{f.name: getattr(args, f.name) for f in fields(ExperimentConfig)})
        check_config(cfg)
        for name in ("jobs", "threads"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
        out = check_output(args.out or ROOT / "results" / "rotated_mnist" / args.preset, "--out")
        cache = check_output(args.cache, "--cache") if args.cache else None
    except (ValueError, OutputPathError) as err:
        raise SystemExit(str(err)) from None
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("this preset needs a CUDA device and none is available; add --device cpu")
    return run_experiment(cfg, out, cache=cache, jobs=args.jobs, threads=args.threads,
                          command=command_for(cfg, out, args.preset), progress=args.progress)


if __name__ == "__main__":
    main()
