"""Measuring the trained zoo: LEE per image at every kept snapshot, and the sample metrics.

For each trained zoo model (:mod:`lielib.book.zoo_train`) and each of its snapshots
(step 0, the function training starts from with BatchNorm statistics re-estimated, to the
trained model), :func:`lielib.book.modelsets.measure` computes per image the LEE and the
sensitivity ratio (:func:`lielib.sensitivity_ratio`) of every action in :data:`lielib.book.modelsets.DEFAULT_ACTIONS` (softmax outputs) on a fixed seeded
set of Fashion-MNIST test images, the same for every model; at the trained snapshot it adds
the sample-based metrics. One table per model, ``<out>/<name>.csv`` (tidy: one row per
snapshot and image), written atomically with metadata; a model whose table exists for the
same training record is skipped, so a killed run resumes. ``merge`` stacks them::

    python -m lielib.book.zoo_measure                  # every trained model, 64 images
    python -m lielib.book.zoo_measure merge            # results/architectures/zoo-lee.csv
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import zoo
from .modelsets import DEFAULT_ACTIONS, Subject, fashion_test_images, measure
from .paths import ROOT
from .results import metadata, read_json, read_table, write_table

__all__ = ["OUT_DIR", "main", "measure_model", "measure_zoo", "merge", "run_folders"]

OUT_DIR = ROOT / "results" / "architectures" / "zoo-lee"
REFERENCES = 8
"""Reference directions per image of the sensitivity ratio (``rho_<action>`` columns)."""
ZOO_RESULTS = ROOT / "results" / "zoo"


def measure_model(name: str, run: dict[str, Any], x: torch.Tensor, *, seed: int = 0,
                  cache: str | Path | None = None) -> pd.DataFrame:
    """One zoo model at each of its snapshots; ``run`` is its ``results/zoo/models`` record."""
    rec = run["record"]
    final = rec["steps"]
    rows = []
    for snap in run["snapshots"]:
        step = snap["step"]
        model, _ = zoo.load_trained(name, step=None if step == final else step, root=cache)
        info = {"arch": rec["arch"], "family": rec["family"], "params": rec["params"],
                "accuracy": snap["test_acc"], "accuracy_kind": f"fashion-mnist test ({snap['n_test']})"}
        table = measure(Subject(model, x, info), model=name, set_name="zoo", seed=seed,
                        metrics=step == final, references=REFERENCES, companions=True)
        fields = ("kind", "size", "n_train", "augment", "condition", "converged")
        head = {"step": step, "final": step == final, **{k: rec[k] for k in fields},
                "train_seed": rec["seed"], "steps": final,
                "passes": rec.get("recipe_passes", final * zoo.BATCH_SIZE / rec["n_train"])}
        rows.append(table.assign(**head))
    return pd.concat(rows, ignore_index=True)


def measure_zoo(names: list[str] | None = None, *, n_images: int = 64, seed: int = 0,
                out: str | Path = OUT_DIR, zoo_results: str | Path = ZOO_RESULTS,
                cache: str | Path | None = None, force: bool = False,
                command: str | None = None) -> list[str]:
    """Measure every trained model of ``names`` (default: the zoo) whose table is missing.

    A table is up to date when its metadata names the same training record (the record's
    ``created_utc``) and image count. Returns the names measured by this call.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    names = zoo.zoo_names() if names is None else [zoo.get_entry(n).name for n in names]
    out, zoo_results = Path(out), Path(zoo_results)
    command = command or shlex.join(["python", "-m", "lielib.book.zoo_measure", *sys.argv[1:]])
    x = idx = None
    done = []
    for name in names:
        rpath = zoo_results / "models" / f"{name}.json"
        if not rpath.is_file():
            continue  # not trained yet
        run = read_json(rpath)
        trained = run["metadata"]["created_utc"]
        path = out / f"{name}.csv"
        if path.is_file() and not force:
            _, meta = read_table(path)
            if (meta.get("trained_utc") == trained and meta.get("n_images") == n_images
                    and meta.get("references") == REFERENCES):
                continue
        if x is None:
            x, idx = fashion_test_images(n_images, seed)
        with torch.random.fork_rng(devices=[]):
            table = measure_model(name, run, x, seed=seed, cache=cache)
        meta = metadata(command=command, seed=seed, device="cpu", trained_utc=trained,
                        n_images=n_images, image_ids=idx, actions=list(DEFAULT_ACTIONS),
                        references=REFERENCES,
                        training_record=str(rpath.relative_to(ROOT) if rpath.is_relative_to(ROOT) else rpath))
        write_table(path, table, meta)
        done.append(name)
        print(f"{name}: measured {table['step'].nunique()} snapshots", flush=True)
    return done


def merge(out: str | Path = OUT_DIR, *, command: str | None = None) -> pd.DataFrame:
    """Stack ``<out>/*.csv`` into ``<out>.csv`` in zoo order."""
    out = Path(out)
    order = {n: i for i, n in enumerate(zoo.zoo_names())}
    files = sorted(out.glob("[!.]*.csv"), key=lambda p: order.get(p.stem, len(order)))
    if not files:
        raise FileNotFoundError(f"no measured zoo models in {out}; run "
                                "`python -m lielib.book.zoo_measure` after training")
    parts = [read_table(f) for f in files]
    table = pd.concat([t for t, _ in parts], ignore_index=True)
    meta = metadata(command=command or "python -m lielib.book.zoo_measure merge",
                    models=[f.stem for f in files], n_images=parts[0][1]["n_images"],
                    per_model_commands=sorted({m["command"] for _, m in parts}),
                    note="one row per model, snapshot step and image")
    write_table(out.with_suffix(".csv"), table, meta)
    return table


def run_folders(train_seed: int = 0, passes: float | None = None) -> tuple[Path, Path, Path]:
    """The training results, checkpoint and output folders of a zoo run
    (:func:`lielib.book.zoo.run_tag`): the zoo itself, or ``runs/<tag>`` below each."""
    from .zoo_train import run_folders as train_folders

    results, cache = train_folders(train_seed, passes)
    tag = zoo.run_tag(train_seed, passes)
    return results, cache, (OUT_DIR / "runs" / tag if tag else OUT_DIR)


def main(argv: list[str] | None = None) -> int:
    """``python -m lielib.book.zoo_measure [merge] [--only NAME ...] [--images N]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m lielib.book.zoo_measure",
                                description=__doc__.split("\n")[0])
    p.add_argument("action", nargs="?", choices=("measure", "merge"), default="measure")
    p.add_argument("--only", nargs="+", metavar="NAME")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--train-seed", type=int, default=0,
                   help="the zoo run's training seed (`zoo_train --seed`)")
    p.add_argument("--passes", type=float, default=None,
                   help="the equal-passes run (`zoo_train --passes`)")
    args = p.parse_args(argv)
    zoo_results, cache, out = run_folders(args.train_seed, args.passes)
    command = shlex.join(["python", "-m", "lielib.book.zoo_measure", *argv])
    torch.set_num_threads(1)
    try:
        if args.action == "measure":
            measure_zoo(args.only, n_images=args.images, seed=args.seed, force=args.force,
                        out=out, zoo_results=zoo_results, cache=cache, command=command)
        run = ["--train-seed", str(args.train_seed)] if args.train_seed else []
        run += ["--passes", f"{args.passes:g}"] if args.passes is not None else []
        table = merge(out, command=shlex.join(["python", "-m", "lielib.book.zoo_measure", "merge", *run]))
    except (KeyError, ValueError, FileNotFoundError) as err:
        p.error(str(err))
    print(f"{table['model'].nunique()} models, {len(table)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
