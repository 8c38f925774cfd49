"""The anti-aliased twin: trained with the zoo's recipe, compared with the plain model.

A *pair* is the plain zoo ResNet-18 and its fully blurred twin (:mod:`lielib.book.blurpool`,
every strided path blurred), trained by :func:`lielib.book.zoo_train.train_entry` with the
same recipe, data and seed. Seed 0's plain model is the zoo's own; for the other seeds both
members are trained here, so that seed-to-seed spread is measured, not assumed.

The comparison measures both members on the same test images: per image and transformation
the raw LEE and the scale-free sensitivity ratio (:func:`lielib.sensitivity_ratio`, one pass
for both), and per transformation the paired bootstrap ratio plain / twin of their means
(:func:`lielib.book.stats.ratio_ci`), per seed and pooled over seeds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .. import blurpool
from ..paths import ROOT, cache_dir
from ..results import metadata, write_json

__all__ = ["load_plain", "measure_variant", "plain_checkpoint", "train_twin", "twin_ratios"]


def plain_checkpoint(zoo_name: str = "resnet-large", seed: int = 0) -> Path:
    """The plain member of pair ``seed``: the zoo's checkpoint for seed 0, else ``<cache>/aliasing/seed<k>``."""
    from .. import zoo

    if seed == 0:
        return zoo.checkpoint_path(zoo_name)
    return cache_dir("aliasing", f"seed{seed}", zoo_name, "final.pt")


def load_plain(zoo_name: str = "resnet-large", seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """The plain member of pair ``seed`` in eval mode, and its record.

    Raises:
        MissingCheckpointError: it has not been trained here; the message gives the command.
    """
    from .. import zoo
    from ..training import load_checkpoint

    if seed == 0:
        return zoo.load_trained(zoo_name)
    path = plain_checkpoint(zoo_name, seed)
    if not path.is_file():
        raise zoo.MissingCheckpointError(
            f"no plain {zoo_name!r} of twin pair seed {seed} at {path}; train the pair with "
            f"`python -m lielib.book.aliasing --train-twin --twin-seed {seed}`")
    state = load_checkpoint(path)
    model = zoo.create(zoo_name, seed=seed)
    model.load_state_dict(state["model"])
    return model.eval(), dict(state["record"])


def train_twin(zoo_name: str = "resnet-large", *, seed: int = 0, steps: int | None = None,
               progress: bool = True, out=None, force: bool = False) -> list[Path]:
    """Train pair ``seed`` with the zoo's recipe; returns the JSON paths of its members.

    The twin always; the plain model too when ``seed`` is not 0 (seed 0's is the zoo's).
    ``steps`` other than the zoo's trains only a twin with that step budget (the rest of
    the recipe unchanged, its schedule stretched), for a comparison at matched accuracy.
    A member whose record ``results/aliasing/<name>-seed<k>.json`` and checkpoint both exist
    is kept unless ``force``. Checkpoints go to ``<cache>/aliasing/seed<k>/<name>/``.
    """
    from .. import zoo
    from ..zoo_train import fashion_mnist, train_entry

    steps = zoo.STEPS if steps is None else steps
    out = ROOT / "results" / "aliasing" if out is None else Path(out)
    members = [(blurpool.twin_entry(zoo_name, steps),
                blurpool.twin_checkpoint(zoo_name, seed, steps))]
    if seed != 0 and steps == zoo.STEPS:
        members.append((zoo.get_entry(zoo_name), plain_checkpoint(zoo_name, seed)))
    cmd = f"python -m lielib.book.aliasing --train-twin --twin-seed {seed}" + (
        "" if steps == zoo.STEPS else f" --twin-steps {steps}")
    written = []
    for entry, ckpt in members:
        path = out / f"twin-{entry.name}-seed{seed}.json"
        if path.is_file() and ckpt.is_file() and not force:
            print(f"{entry.name} seed {seed}: trained already ({path})", flush=True)
            written.append(path)
            continue
        res = train_entry(entry, fashion_mnist("train"), fashion_mnist("test"), seed=seed,
                          steps=steps, cache=cache_dir("aliasing", f"seed{seed}"),
                          progress=progress)
        written.append(write_json(path, {**res, "metadata": metadata(
            command=cmd, seed=seed, plain=zoo_name)}))
    return written


def measure_variant(model: torch.nn.Module, x: torch.Tensor, actions, variant: str,
                    *, references: int = 8, seed: int = 0) -> pd.DataFrame:
    """Per image and action: ``lee`` and ``rho`` of one member of a pair, labelled ``variant``.

    The plain model of a pair is measured once however many twins it is compared with.
    """
    from lielib import sensitivity_ratio

    f = sensitivity_ratio(model, x, list(actions), num_references=references, seed=seed,
                          stencil="paper")
    return f.assign(variant=variant)


def _ratio_row(g: pd.DataFrame, seed: int) -> dict:
    from ..stats import ratio_ci

    wide = g.pivot_table(index="image", columns="variant", values=["lee", "rho"],
                         aggfunc="mean").dropna()
    row = {}
    for metric in ("lee", "rho"):
        r = ratio_ci(wide[metric]["plain"], wide[metric]["blurall"], seed=seed)
        row.update({f"{metric}_ratio": r["ratio"], f"{metric}_lo": r["lo"],
                    f"{metric}_hi": r["hi"]})
    return {**row, "n": len(wide)}


def twin_ratios(per_image: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per action and pair seed (and twin step budget): plain / twin ratio of mean ``lee`` and of mean ``rho``.

    A paired bootstrap over images (:func:`lielib.book.stats.ratio_ci`); above 1 means the
    blurred twin is the more equivariant. With more than one seed, rows with ``twin_seed``
    ``"all"`` pool them: each image's value averaged over the seeds' models, then the same
    paired bootstrap (the per-seed rows show the spread between trainings).
    """
    rows = []
    has_seed = "twin_seed" in per_image.columns
    keys = ["twin_steps", "action"] if "twin_steps" in per_image.columns else ["action"]
    for key, g in per_image.groupby(keys, sort=False):
        head = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        seeds = sorted(g.twin_seed.unique()) if has_seed else [None]
        for s in seeds:
            part = g if s is None else g[g.twin_seed == s]
            rows.append({**head, **({"twin_seed": s} if has_seed else {}),
                         **_ratio_row(part, seed)})
        if len(seeds) > 1:
            rows.append({**head, "twin_seed": "all", **_ratio_row(g, seed)})
    return pd.DataFrame(rows)
