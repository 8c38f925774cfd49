"""The zoo's extra runs beside the zoo itself: more training seeds, and equal passes.

The zoo (:mod:`lielib.book.zoo`) trains every model once, with seed 0, for an equal number
of steps. Two kinds of run repeat part of it, each in a folder named by
:func:`lielib.book.zoo.run_tag`:

- ``seed<K>``: the ten small models on all 60,000 images without augmentation
  (:data:`SEED_MODELS`), trained with seed ``K``;
- ``passes<P>-seed<K>``: the small models at 2k, 8k and 60k images, each trained for ``P``
  passes over its own training set (so the data size varies at equal passes, not at
  equal steps), seed ``K``.

A run's model counts once both its training record (``results/zoo/runs/<tag>/models/
<name>.json``) and its measurement (``results/architectures/zoo-lee/runs/<tag>/<name>.csv``,
made from that same record) exist, so a run that is still going contributes the models it
has finished. :func:`seed_models` stacks seed 0's rows of the ten models (from the zoo's
own tables) with every seed run found; :func:`passes_models` stacks the equal-passes runs.
Both return one row per model and training seed, LEE and its companions averaged over the
same test images (:func:`lielib.book.architectures.per_model`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from . import zoo
from .architectures import per_model
from .results import MissingResultsError, read_json, read_table

__all__ = ["SEED_MODELS", "add_translate", "passes_models", "run_models", "run_tags",
           "seed_models", "zoo_seed0"]

SEED_MODELS = tuple(e.name for e in zoo.ZOO
                    if e.size == "small" and e.augment == "none" and e.n_train == 60_000)
"""The ten models repeated with more seeds: one per architecture kind."""
ZOO_LEE, ZOO_ACC = "architectures/zoo-lee.csv", "zoo/accuracy.csv"
_SEED_TAG = re.compile(r"seed(\d+)$")
_PASSES_TAG = re.compile(r"passes([0-9.]+)-seed(\d+)$")


def add_translate(frame: pd.DataFrame) -> pd.DataFrame:
    """``<prefix>translate`` = mean of ``<prefix>translate_x`` and ``<prefix>translate_y``
    for every prefix that has both (``lee_``, ``rho_``, ``lee_logits_``, ``lee_central_``,
    ``lee_logits_central_``), as the paper's Figure 1 right averages the two shifts."""
    out = frame.copy()
    for col in frame.columns:
        if col.endswith("_translate_x") and col.replace("_x", "_y") in frame.columns:
            out[col[:-2]] = (frame[col] + frame[col.replace("_x", "_y")]) / 2
    return out


def run_tags(results: Path, kind: str) -> list[str]:
    """The run folders under ``results/zoo/runs`` of ``kind`` (``"seed"`` or ``"passes"``)."""
    folder = results / "zoo" / "runs"
    pattern = {"seed": _SEED_TAG, "passes": _PASSES_TAG}[kind]
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and pattern.fullmatch(p.name))


def run_models(results: Path, tag: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per finished model of run ``tag`` at its trained snapshot, and the files read.

    A model is finished when its training record and its measurement exist and the
    measurement names that record (``trained_utc``); a model trained but not measured yet
    is left out. Accuracy and convergence come from the record (all 10,000 test images).
    """
    models_dir = results / "zoo" / "runs" / tag / "models"
    lee_dir = results / "architectures" / "zoo-lee" / "runs" / tag
    rows, files = [], []
    for rpath in sorted(models_dir.glob("[!.]*.json")) if models_dir.is_dir() else []:
        mpath = lee_dir / f"{rpath.stem}.csv"
        if not mpath.is_file():
            continue
        run = read_json(rpath)
        table, meta = read_table(mpath)
        if meta.get("trained_utc") not in (None, run["metadata"]["created_utc"]):
            continue  # measured from an earlier training of the same name
        rec = run["record"]
        per = per_model(table[table["final"].astype(bool)])
        per = per.assign(accuracy=rec["test_acc"], converged=bool(rec["converged"]),
                         train_seed=int(rec["seed"]), steps=int(rec["steps"]),
                         passes=float(table["passes"].iloc[0]) if "passes" in table
                         else rec["steps"] * zoo.BATCH_SIZE / rec["n_train"], run=tag)
        rows.append(per)
        files += [str(rpath), str(mpath)]
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return (add_translate(frame) if len(frame) else frame), files


def zoo_seed0(results: Path) -> pd.DataFrame:
    """Every zoo model (seed 0, equal steps) at its trained snapshot, one row each.

    Raises:
        MissingResultsError: the zoo's tables are missing.
    """
    lee = read_table(results / ZOO_LEE)[0]
    records = read_table(results / ZOO_ACC)[0]
    snap = per_model(lee, records)
    final = snap[snap["final"].astype(bool)].copy()
    rec = records.set_index("name")
    final["train_seed"] = 0
    final["steps"] = final["model"].map(rec["steps"]).astype(int)
    final["passes"] = final["steps"] * zoo.BATCH_SIZE / final["n_train"].astype(float)
    final["run"] = ""
    return add_translate(final.reset_index(drop=True))


def seed_models(results: Path) -> tuple[pd.DataFrame, list[str]]:
    """Seed 0 of the :data:`SEED_MODELS` stacked with every ``seed<K>`` run found.

    One row per model and ``train_seed``, with ``kind`` (the architecture, the unit of the
    intervals), accuracy, convergence and the per-model means of every LEE column. Seed 0
    lacks the companion columns (logits, central stencil) that the seed runs carry: they
    are ``NaN`` there.

    Raises:
        MissingResultsError: the zoo's own tables are missing.
    """
    base = zoo_seed0(results)
    frames = [base[base["model"].isin(SEED_MODELS)]]
    files = [str(results / ZOO_LEE), str(results / ZOO_ACC)]
    for tag in run_tags(results, "seed"):
        part, read = run_models(results, tag)
        if len(part):
            frames.append(part[part["model"].isin(SEED_MODELS)])
            files += read
    return pd.concat(frames, ignore_index=True), files


def passes_models(results: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every finished model of the ``passes<P>-seed<K>`` runs, one row per model and run.

    Raises:
        MissingResultsError: no equal-passes run has a finished model yet.
    """
    frames, files = [], []
    for tag in run_tags(results, "passes"):
        part, read = run_models(results, tag)
        if len(part):
            frames.append(part)
            files += read
    if not frames:
        raise MissingResultsError(
            "the results are not there yet: no equal-passes zoo run under results/zoo/runs/"
            "passes<P>-seed<K> has a measured model (tools/long_runs.sh zoo-passes:P:K)")
    return pd.concat(frames, ignore_index=True), files
