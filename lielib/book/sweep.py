"""Run a chapter once per model through papermill; shard, resume, merge.

Usage::

    python -m lielib.book.sweep CHAPTER --models SET [--only NAME ...] [--shard i/n] [--out DIR]
                           [-p key value ...] [--force]
    python -m lielib.book.sweep merge DIR [--models SET] [--output FILE]

Each model of ``SET`` (see :mod:`lielib.book.modelsets`) runs ``CHAPTER`` (a jupytext ``.py``
chapter with a cell tagged ``parameters``) with the parameters ``model``, ``source`` (the
set), ``out`` (``DIR/<model>.csv``) and ``command`` (this sweep's command line, which the
chapter records in the table's metadata), plus any ``-p key value`` pairs. The chapter
writes ``DIR/<model>.csv`` atomically (:func:`lielib.book.results.write_table`), so a model is
done exactly when its file exists: a killed sweep reruns only what is missing. A failing
model does not stop the sweep: its error and traceback go to
``DIR/failures/<model>.json`` (removed when it later succeeds) and the exit status is 1.

``--shard i/n`` runs the models whose position ``k`` in the set has ``k % n == i``
(``0 <= i < n``), so the ``n`` shards of a Slurm array
(``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) cover every model exactly
once and can run in parallel. ``merge`` concatenates ``DIR/*.csv`` into ``DIR.csv`` with
metadata that says the sweep produced it. Executed notebooks are kept, for debugging, in
the cache (``$LIELIB_CACHE/sweeps`` or ``cache/sweeps``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .results import ROOT, meta_path, metadata, write_json, write_table

__all__ = [
    "SweepError",
    "chapter_parameters",
    "main",
    "merge",
    "parse_shard",
    "result_path",
    "run_sweep",
    "shard",
]

RESERVED = ("model", "source", "out", "command")
"""Parameters the sweep sets itself; a chapter must declare ``model`` and ``out``."""


class SweepError(ValueError):
    """Bad sweep input: unknown set or model, bad shard, chapter without parameters."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SweepError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise SweepError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards count from 0)")
    return i, n


def shard(models: Sequence[str], i: int, n: int) -> list[str]:
    """The models of shard ``i`` of ``n``: every ``n``-th model starting at position ``i``.

    Over ``i = 0..n-1`` the shards partition ``models`` (each exactly once), whatever the
    machine or the order the shards run in.
    """
    if n < 1 or not 0 <= i < n:
        raise SweepError(f"shard {i}/{n}: need n >= 1 and 0 <= i < n")
    return [m for k, m in enumerate(models) if k % n == i]


def result_path(out: str | os.PathLike, model: str) -> Path:
    """``out/<model>.csv`` (a ``/`` in the name becomes ``__``)."""
    return Path(out) / f"{model.replace('/', '__')}.csv"


def _failure_path(out: Path, model: str) -> Path:
    return out / "failures" / f"{model.replace('/', '__')}.json"


def chapter_parameters(chapter: str | os.PathLike) -> dict[str, Any]:
    """The names and default values of the chapter's ``parameters`` cell.

    Raises:
        SweepError: no such file, or no cell tagged ``parameters``.
    """
    import jupytext

    chapter = Path(chapter)
    if not chapter.is_file():
        raise SweepError(f"chapter {chapter} does not exist")
    nb = jupytext.read(chapter)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise SweepError(
            f"{chapter} has no cell tagged `parameters` (write `# %% tags=[\"parameters\"]`)"
        )
    out: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    try:
                        out[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[t.id] = None
    return out


def _coerce(value: str, default: Any) -> Any:
    """A ``-p`` value typed like the parameter's default (JSON for lists, numbers, bools)."""
    if isinstance(default, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _run_one(chapter: Path, nb_out: Path, params: dict[str, Any]) -> None:
    import jupytext
    import papermill

    nb = jupytext.read(chapter)
    nb_out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        nb, str(nb_out), parameters=params, kernel_name="python3", language="python",
        progress_bar=False, cwd=str(chapter.parent),
    )


def _notebook_dir(chapter: Path, out: Path) -> Path:
    base = os.environ.get("LIELIB_CACHE")
    cache = Path(base).expanduser() if base else ROOT / "cache"
    return cache / "sweeps" / f"{chapter.stem}-{out.name}"


def run_sweep(
    chapter: str | os.PathLike,
    set_name: str,
    *,
    only: Sequence[str] | None = None,
    shard_spec: tuple[int, int] = (0, 1),
    out: str | os.PathLike | None = None,
    params: dict[str, str] | None = None,
    force: bool = False,
    command: str | None = None,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Run ``chapter`` for every model of the shard that has no results yet.

    Returns:
        ``{"done": [...], "skipped": [...], "failed": [...]}`` for this shard.
    """
    from tqdm.auto import tqdm

    from .modelsets import UnknownModelSetError, check_model, preflight, set_models

    chapter = Path(chapter).resolve()
    declared = chapter_parameters(chapter)
    for name in ("model", "out"):
        if name not in declared:
            raise SweepError(f"{chapter.name}'s parameters cell must declare `{name}`")
    try:
        models = set_models(set_name)
        for m in only or ():
            check_model(set_name, m)
    except UnknownModelSetError as err:
        raise SweepError(str(err)) from None
    if only:
        models = [m for m in models if m in set(only)]
    extra = {}
    for key, value in (params or {}).items():
        if key in RESERVED:
            raise SweepError(f"-p {key}: the sweep sets `{key}` itself")
        if key not in declared:
            raise SweepError(
                f"-p {key}: {chapter.name} has no parameter {key!r}; it declares {sorted(declared)}"
            )
        extra[key] = _coerce(value, declared[key])
    if set_name == "paper" and not extra.get("imagenet"):
        raise SweepError(
            "the paper set needs an ImageNet validation folder: add `-p imagenet FOLDER` "
            "(an ImageFolder <folder>/<wnid>/*.JPEG with the 1000 ILSVRC2012 classes)"
        )
    if set_name == "paper" and not Path(extra["imagenet"]).is_dir():
        raise SweepError(
            f"ImageNet folder {extra['imagenet']} does not exist: pass the folder that holds "
            "the ILSVRC2012 validation images as <wnid>/*.JPEG (or its parent holding val/)"
        )
    out = Path(out) if out is not None else ROOT / "results" / chapter.stem / set_name
    out = out.resolve()
    command = command or shlex.join(["python", "-m", "lielib.book.sweep", *sys.argv[1:]])
    mine = shard(models, *shard_spec)
    todo = [m for m in mine if force or not result_path(out, m).is_file()]
    try:
        preflight(set_name, todo)
    except FileNotFoundError as err:
        raise SweepError(str(err)) from None
    nb_dir = _notebook_dir(chapter, out)
    status: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
    bar = tqdm(mine, desc=f"{chapter.stem} {set_name} shard {shard_spec[0]}/{shard_spec[1]}",
               disable=not progress)
    for model in bar:
        target = result_path(out, model)
        if target.is_file() and not force:
            status["skipped"].append(model)
            continue
        bar.set_postfix_str(model)
        run_params = {**extra, "model": model, "out": str(target), "command": command}
        if "source" in declared:
            run_params["source"] = set_name
        run_params = {k: v for k, v in run_params.items() if k in declared}
        start = time.perf_counter()
        try:
            _run_one(chapter, nb_dir / f"{model.replace('/', '__')}.ipynb", run_params)
            if not target.is_file():
                raise RuntimeError(f"{chapter.name} ran for {model} but did not write {target}")
        except Exception as err:  # noqa: BLE001 - record any failure and go on
            status["failed"].append(model)
            write_json(_failure_path(out, model), {
                "model": model, "set": set_name, "chapter": str(chapter.relative_to(ROOT))
                if chapter.is_relative_to(ROOT) else str(chapter),
                "error": f"{type(err).__name__}: {err}".strip()[:4000],
                "traceback": traceback.format_exc()[-20000:],
                "notebook": str(nb_dir / f"{model.replace('/', '__')}.ipynb"),
                "seconds": round(time.perf_counter() - start, 1),
                "metadata": metadata(command=command),
            })
            tqdm.write(f"FAILED {model}: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")
            continue
        _failure_path(out, model).unlink(missing_ok=True)
        status["done"].append(model)
        tqdm.write(f"done {model} in {time.perf_counter() - start:.0f} s")
    return status


def merge(
    out: str | os.PathLike,
    *,
    set_name: str | None = None,
    output: str | os.PathLike | None = None,
    command: str | None = None,
) -> tuple[Path, pd.DataFrame]:
    """Concatenate every ``out/*.csv`` (all shards) into ``output`` (default ``out.csv``).

    The metadata lists the models, the sweep commands that made the per-model files,
    any recorded failures and, when ``set_name`` is given, the set's models that are
    missing. Raises :class:`SweepError` when there is nothing to merge.
    """
    out = Path(out).resolve()
    files = sorted(out.glob("*.csv"))
    if not files:
        raise SweepError(f"nothing to merge: {out} holds no per-model .csv files (run the sweep)")
    frames, metas = [], []
    for f in files:
        frames.append(pd.read_csv(f))
        mp = meta_path(f)
        metas.append(json.loads(mp.read_text()) if mp.exists() else {})
    table = pd.concat(frames, ignore_index=True)
    models = [f.stem for f in files]
    expected: list[str] = []
    if set_name is not None:
        from .modelsets import set_models

        expected = set_models(set_name)
        order = {m.replace("/", "__"): i for i, m in enumerate(expected)}
        models.sort(key=lambda m: order.get(m, len(order)))
        if "model" in table:
            table = table.sort_values(
                ["model", "image"] if "image" in table else ["model"],
                key=lambda s: s.map(order).fillna(len(order)) if s.name == "model" else s,
                kind="stable").reset_index(drop=True)
    failures = sorted(p.stem for p in (out / "failures").glob("*.json"))
    sweep_cmds = sorted({m.get("command") for m in metas if m.get("command")})
    output = Path(output) if output is not None else out.with_suffix(".csv")
    command = command or shlex.join(["python", "-m", "lielib.book.sweep", *sys.argv[1:]])
    meta = metadata(
        command=command,
        produced_by="lielib.book.sweep",
        sweep_commands=sweep_cmds,
        per_model_files=[str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in files],
        models=models,
        set=set_name,
        missing=[m for m in expected if m.replace("/", "__") not in set(models)],
        failures=failures,
        per_model_created_utc=[m.get("created_utc") for m in metas],
        seed=next((m.get("seed") for m in metas if m.get("seed") is not None), None),
    )
    write_table(output, table, meta)
    return output, table


def _parse_p(pairs: list[list[str]] | None) -> dict[str, str]:
    return {k: v for k, v in (pairs or [])}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        p = argparse.ArgumentParser(prog="python -m lielib.book.sweep merge",
                                    description="Merge a sweep's per-model tables into one.")
        p.add_argument("dir", help="the sweep's --out folder")
        p.add_argument("--models", help="the model set (orders rows, lists missing models)")
        p.add_argument("--output", help="merged table (default DIR.csv)")
        args = p.parse_args(argv[1:])
        try:
            path, table = merge(args.dir, set_name=args.models, output=args.output,
                                command=shlex.join(["python", "-m", "lielib.book.sweep", *argv]))
        except (SweepError, ValueError) as err:
            p.error(str(err))
        print(f"merged {table['model'].nunique() if 'model' in table else len(table)} models, "
              f"{len(table)} rows -> {path}")
        return 0
    p = argparse.ArgumentParser(prog="python -m lielib.book.sweep", description=__doc__.split("\n")[0],
                                epilog="merge: python -m lielib.book.sweep merge DIR [--models SET]")
    p.add_argument("chapter", help="a jupytext .py chapter with a `parameters` cell")
    p.add_argument("--models", required=True, help="model set: zoo, zoo-init, lite or paper")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these models of the set")
    p.add_argument("--shard", default="0/1", help="i/n: run shard i (0-based) of n")
    p.add_argument("--out", help="per-model results folder (default results/<chapter>/<set>)")
    p.add_argument("-p", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="a chapter parameter (repeatable); JSON values for lists and numbers")
    p.add_argument("--force", action="store_true", help="rerun models that have results")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        status = run_sweep(
            args.chapter, args.models, only=args.only, shard_spec=parse_shard(args.shard),
            out=args.out, params=_parse_p(args.p), force=args.force,
            command=shlex.join(["python", "-m", "lielib.book.sweep", *argv]),
            progress=not args.no_progress,
        )
    except SweepError as err:
        p.error(str(err))
    print(f"done {len(status['done'])}, already there {len(status['skipped'])}, "
          f"failed {len(status['failed'])}" + (f": {', '.join(status['failed'])}" if status["failed"] else ""))
    return 1 if status["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
