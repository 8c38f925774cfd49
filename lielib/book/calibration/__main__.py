"""Command line: ``python -m lielib.book.calibration [--preset full] [--seed K] [--untrained] ...``.

Rerunning the same command resumes: controls already measured are read from the cache.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..paths import ROOT
from ..rotated_mnist.config import PRESETS
from .controls import GROUPS
from .run import CalibrationSettings, run_calibration

__all__ = ["main"]

_D = CalibrationSettings()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lielib.book.calibration",
        description="Measure controls of known rotation invariance (group-averaged rotated-MNIST "
        "networks, an invariant and a non-invariant readout) with every metric of the book, and say "
        "which metric ranks them as theory says. Measures the networks that have finished training "
        "and lists the missing ones. Resumable.")
    p.add_argument("--preset", choices=list(PRESETS), default=_D.preset,
                   help="the rotated-MNIST preset whose networks are measured (default full)")
    p.add_argument("--seed", type=int, default=_D.seed, help="its seed (default 0)")
    p.add_argument("--networks", nargs="+", default=list(_D.networks),
                   help="rotated-MNIST variants to measure (default: cnn cnn+rot scratch mae)")
    p.add_argument("--averaged", nargs="*", default=list(_D.averaged),
                   help="networks that also get group-averaged controls (default: cnn cnn+rot)")
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(_D.groups))
    p.add_argument("--n-images", type=int, default=_D.n_images, help="rotated test digits measured")
    p.add_argument("--eval-size", type=int, default=_D.eval_size, help="test digits for accuracy")
    p.add_argument("--references", type=int, default=_D.references)
    p.add_argument("--measure-seed", type=int, default=_D.measure_seed)
    p.add_argument("--untrained", action="store_true", help="measure freshly initialised networks")
    p.add_argument("--out", default=None,
                   help="results folder (default results/calibration/<preset>-seed<K>[-untrained])")
    p.add_argument("--cache", default=None, help="per-image values (default <cache>/calibration/<key>)")
    p.add_argument("--rmnist-cache", default=None,
                   help="rotated-MNIST checkpoints (default: that run's cache folder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Parse ``argv`` and run (or resume) the calibration."""
    args = _parser().parse_args(argv)
    try:
        s = CalibrationSettings(preset=args.preset, seed=args.seed, networks=tuple(args.networks),
                                averaged=tuple(args.averaged), groups=tuple(args.groups),
                                n_images=args.n_images, eval_size=args.eval_size,
                                references=args.references, measure_seed=args.measure_seed,
                                untrained=args.untrained)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    torch.set_num_threads(args.threads)
    name = f"{s.preset}-seed{s.seed}" + ("-untrained" if s.untrained else "")
    out = Path(args.out) if args.out else ROOT / "results" / "calibration" / name
    out = out if out.is_absolute() else Path.cwd() / out
    return run_calibration(s, out, cache=args.cache, rmnist_cache=args.rmnist_cache)


if __name__ == "__main__":
    main()
