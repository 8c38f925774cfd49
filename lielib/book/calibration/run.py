"""The calibration run: every control of every available network, every metric, tables in ``results/``.

:func:`run_calibration` loads the rotated-MNIST networks that have finished training (or
untrained ones, ``untrained=True``), builds their controls
(:mod:`~lielib.book.calibration.controls`), measures each on the same rotated test digits
(:func:`~lielib.book.calibration.measure.measure_model`; per-image values cached per
control, so a killed run resumes) and writes, each with its ``.meta.json``:

* ``controls.csv``: per network and control, accuracy on ``eval_size`` rotated test
  digits and the largest change of a logit under ``rot90`` on the measured digits;
* ``per_image.csv``, ``summary.csv``: every quantity per image, and its mean with a 95%
  bootstrap interval;
* ``contrasts.csv``, ``verdicts.csv``: the paired contrasts theory orders, and per
  quantity whether it ranks the controls and reads the invariant readout as about 0.

Networks whose checkpoints are missing are listed in the metadata (``missing``) and in
the log; the tables hold what exists.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..paths import ROOT, NotAvailableError, cache_dir
from ..results import atomic_path, metadata, write_table
from ..rotated_mnist.config import ExperimentConfig, parse_variant
from ..rotated_mnist.config import preset as rmnist_preset
from ..rotated_mnist.data import load_rotated_mnist
from ..rotated_mnist.run import default_cache
from ..rotated_mnist.train import classifier
from ..training import accuracy, load_checkpoint, recalibrate_batchnorm
from .controls import GROUPS, GroupAveraged, PixelLinear, PixelMean
from .measure import ACTIONS, QUANTITIES, measure_model, paired_contrasts, summarise, verdicts

__all__ = ["CalibrationSettings", "MissingNetworkError", "load_network", "run_calibration"]

READOUTS = ("pixel-mean", "pixel-linear")


class MissingNetworkError(NotAvailableError, FileNotFoundError):
    """A rotated-MNIST network has not finished training (no final checkpoint)."""


@dataclass(frozen=True)
class CalibrationSettings:
    """What one calibration run measures.

    Attributes:
        preset, seed: the rotated-MNIST run whose networks are measured
            (``python -m lielib.book.rotated_mnist --preset P --seed K``).
        networks: its variants to measure (``mae+up`` and the others are valid).
        averaged: the networks that also get group-averaged controls (:data:`GROUPS`).
        groups: which groups.
        n_images: rotated test digits measured (the first ones of the test split).
        eval_size: rotated test digits on which each control's accuracy is scored.
        references: phase-randomised references of the sensitivity ratio.
        measure_seed: references and sampled transforms (the same for every control).
        untrained: measure freshly initialised networks instead (BatchNorm statistics
            re-estimated on training digits), e.g. before any network is trained.
    """

    preset: str = "full"
    seed: int = 0
    networks: tuple[str, ...] = ("cnn", "cnn+rot", "scratch", "mae")
    averaged: tuple[str, ...] = ("cnn", "cnn+rot")
    groups: tuple[str, ...] = tuple(GROUPS)
    n_images: int = 128
    eval_size: int = 2_000
    references: int = 8
    measure_seed: int = 0
    untrained: bool = False
    n_resamples: int = field(default=2_000, compare=False)

    def __post_init__(self) -> None:
        for v in self.networks:
            parse_variant(v)
        if not set(self.averaged) <= set(self.networks):
            raise ValueError(f"averaged networks {sorted(set(self.averaged) - set(self.networks))} "
                             "are not among the measured networks")
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown:
            raise ValueError(f"unknown groups {unknown}; use some of {list(GROUPS)}")
        if self.n_images < 2 or self.eval_size < 1 or self.references < 2:
            raise ValueError("need n_images >= 2, eval_size >= 1 and references >= 2")

    @property
    def config(self) -> ExperimentConfig:
        """The rotated-MNIST config whose networks are measured."""
        return rmnist_preset(self.preset, seed=self.seed)

    def key(self) -> str:
        """A short hash of what changes the per-image values (not the networks chosen)."""
        state = {"fingerprint": self.config.fingerprint(), "n_images": self.n_images,
                 "references": self.references, "measure_seed": self.measure_seed,
                 "untrained": self.untrained}
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:10]

    def command(self, out_dir: Path) -> str:
        """The command line that reproduces this run into ``out_dir``."""
        args = ["python", "-m", "lielib.book.calibration", "--preset", self.preset,
                "--seed", str(self.seed), "--networks", *self.networks, "--averaged", *self.averaged,
                "--groups", *self.groups, "--n-images", str(self.n_images),
                "--eval-size", str(self.eval_size), "--references", str(self.references),
                "--measure-seed", str(self.measure_seed)]
        if self.untrained:
            args.append("--untrained")
        out = Path(out_dir).resolve()
        return shlex.join([*args, "--out", str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)])


def load_network(cfg: ExperimentConfig, variant: str, folder: Path, *, untrained: bool = False,
                 ) -> tuple[nn.Module, dict]:
    """A rotated-MNIST network in eval mode and what is known of it.

    Trained: the weights of ``folder/<variant>/state.pt`` once training has finished.
    Untrained: the initialisation of ``variant``'s architecture (``mae``: the ViT from
    scratch's), BatchNorm statistics re-estimated on ``cfg.bn_size`` training digits.

    Raises:
        MissingNetworkError: the variant has not finished training in ``folder``.
    """
    base = parse_variant(variant).base
    model = classifier(cfg, "cnn" if base == "cnn" else "scratch", folder)
    if untrained:
        recalibrate_batchnorm(model, load_rotated_mnist("train", seed=cfg.seed, size=cfg.bn_size).images)
        return model.eval(), {"weights": "untrained", "test_accuracy": float("nan"), "epochs": 0}
    path = folder / variant / "state.pt"
    state = load_checkpoint(path) if path.is_file() else None
    if state is None or "final" not in state:
        raise MissingNetworkError(
            f"{variant}: no finished training in {folder} ({'unfinished' if state else 'no checkpoint'}); "
            f"train it with: python -m lielib.book.rotated_mnist --preset ... --seed {cfg.seed} "
            f"--variants {variant}")
    model.load_state_dict(state["model"])
    return model.eval(), {"weights": "trained", "test_accuracy": float(state["final"]["test_accuracy"]),
                          "epochs": int(state["epoch"])}


def _controls(network: nn.Module, name: str, s: CalibrationSettings) -> dict[str, nn.Module]:
    out = {"plain": network}
    if name in s.averaged:
        out.update({g: GroupAveraged(network, GROUPS[g]).eval() for g in s.groups})
    return out


@torch.no_grad()
def _rot90_change(model: nn.Module, x: torch.Tensor) -> float:
    """``max |f(rot90 x) - f(x)|`` over the images and logits (0 for a rot90-invariant model)."""
    return float((model(torch.rot90(x, 1, dims=(-2, -1))) - model(x)).abs().max())


def run_calibration(s: CalibrationSettings, out_dir: str | Path, *, cache: str | Path | None = None,
                    rmnist_cache: str | Path | None = None, log=print) -> dict[str, Path]:
    """Measure every control that can be built now and write the tables (see the module docstring).

    Args:
        cache: per-image values (default ``cache_dir("calibration", s.key())``).
        rmnist_cache: the rotated-MNIST checkpoints (default: that run's cache folder).

    Returns:
        The written tables by name (none when no network is available).
    """
    cfg = s.config
    out_dir = Path(out_dir)
    folder = Path(rmnist_cache) if rmnist_cache is not None else default_cache(cfg)
    cache = Path(cache) if cache is not None else cache_dir("calibration", s.key())
    command = s.command(out_dir)
    test = load_rotated_mnist("test", seed=cfg.seed, size=max(s.n_images, s.eval_size))
    x, x_eval, y_eval = test.images[: s.n_images], test.images[: s.eval_size], test.labels[: s.eval_size]
    log(f"calibration: networks from {folder}, per-image values in {cache}, tables in {out_dir}")
    models: list[tuple[str, str, nn.Module, dict]] = []
    missing: list[str] = []
    for variant in s.networks:
        try:
            net, info = load_network(cfg, variant, folder, untrained=s.untrained)
        except MissingNetworkError as err:
            log(f"missing {err}")
            missing.append(variant)
            continue
        models += [(variant, c, m, info) for c, m in _controls(net, variant, s).items()]
    models += [("readouts", "pixel-mean", PixelMean(x, seed=s.measure_seed), {"weights": "fixed"}),
               ("readouts", "pixel-linear", PixelLinear(x, seed=s.measure_seed), {"weights": "fixed"})]
    frames, rows = [], []
    for network, control, model, info in models:
        path = cache / network / f"{control}.csv"
        if path.is_file() and len(pd.read_csv(path)) == s.n_images * (len(ACTIONS) + 1):
            frame = pd.read_csv(path)
        else:
            t = time.perf_counter()
            frame = measure_model(model, x, references=s.references, seed=s.measure_seed)
            with atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False)
            log(f"{network} {control}: measured {s.n_images} digits in {time.perf_counter() - t:.0f} s")
        frames.append(frame.assign(network=network, control=control))
        acc = accuracy(model, x_eval, y_eval)[0] if network != "readouts" else float("nan")
        rows.append({"network": network, "control": control, "weights": info["weights"],
                     "group_order": GROUPS.get(control, 1 if control == "plain" else 0),
                     "network_test_accuracy": info.get("test_accuracy", float("nan")),
                     "control_accuracy": acc, "n_eval": s.eval_size,
                     "rot90_max_logit_change": _rot90_change(model.eval(), x)})
    per_image = pd.concat(frames, ignore_index=True)[["network", "control", "image", "action", *QUANTITIES]]
    kw = {"n_resamples": s.n_resamples, "seed": s.measure_seed}
    contrasts = pd.concat([paired_contrasts(per_image, action=a, **kw) for a in ("rotate", "translate")],
                          ignore_index=True)
    meta = metadata(command=command, seed=s.seed, device="cpu", settings=asdict(s),
                    rotated_mnist_fingerprint=cfg.fingerprint(), rotated_mnist_cache=str(folder),
                    measured=[n for n in s.networks if n not in missing], missing=missing,
                    n_images=s.n_images, threads=torch.get_num_threads(),
                    images="the first n_images digits of the rebuilt rotated-MNIST test split")
    out = {
        "controls": write_table(out_dir / "controls.csv", pd.DataFrame(rows), meta),
        "per_image": write_table(out_dir / "per_image.csv", per_image.map(
            lambda v: float(f"{v:.6g}") if isinstance(v, float) else v), meta),
        "summary": write_table(out_dir / "summary.csv", summarise(per_image, **kw), meta),
        "contrasts": write_table(out_dir / "contrasts.csv", contrasts, meta),
        "verdicts": write_table(out_dir / "verdicts.csv", verdicts(contrasts), meta),
    }
    log(f"calibration: {len(models)} controls measured; missing networks: {', '.join(missing) or 'none'}")
    return out
