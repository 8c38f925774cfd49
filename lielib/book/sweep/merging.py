"""Merging a sweep: every per-model table of a results folder, checked, into one table.

A per-model table is ``DIR/<model>.csv`` beside its ``.meta.json``, as
:func:`lielib.book.results.write_table` writes it. Files whose name starts with a dot
(the temporaries of an interrupted write, hidden files) are not results and are never
read. Every other ``.csv`` must be a whole table of one model: its metadata present and
matching (``csv_sha256``), at least one row, a ``model`` column naming the model the file
is named after, and the same columns as the other tables. A file that is not is reported
by name with what to do, and nothing is written.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from ..results import (
    OutputPathError,
    UnreadableResultsError,
    check_output,
    meta_path,
    metadata,
    read_table,
    write_table,
)
from .core import ROOT, result_path
from .inputs import SweepError

__all__ = ["merge", "merged_path", "read_model_table", "table_files"]


def table_files(out: str | os.PathLike) -> list[Path]:
    """The per-model tables in ``out``: ``*.csv`` except dot-files (temporaries, hidden)."""
    return sorted(p for p in Path(out).glob("*.csv") if not p.name.startswith(".") and p.is_file())


def merged_path(out: str | os.PathLike) -> Path:
    """Where ``merge`` writes by default: ``DIR.csv`` beside the folder ``DIR``."""
    out = Path(out)
    return out.with_name(out.name + ".csv")


def read_model_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict, str]:
    """One per-model table, checked; ``(table, meta, model)``.

    Raises:
        SweepError: the file cannot be read, has no metadata carrying its hash, no rows, no
            ``model`` column, rows of several models, or rows of a model other than the one
            its name says; the message names the file and what to do.
    """
    path = Path(path)
    fix = (f"delete {path.name} (and {meta_path(path).name}) and run the sweep again: it "
           "measures only the models that have no table")
    try:
        table, meta = read_table(path)
    except UnreadableResultsError as err:
        raise SweepError(f"{path}: {err} In a sweep: {fix}") from None
    except OSError as err:
        raise SweepError(f"cannot read {path} ({type(err).__name__}: {err}); {fix}") from None
    if table.empty:
        raise SweepError(f"{path} has a header but no rows; {fix}")
    if "model" not in table:
        raise SweepError(f"{path} has no `model` column (columns: {list(table.columns)}); "
                         f"a worker must write one row per measurement with its model; {fix}")
    names = table["model"].dropna().astype(str).unique().tolist()
    if len(names) != 1 or table["model"].isna().any():
        raise SweepError(f"{path} holds rows of {len(names)} models ({', '.join(names[:5])}) "
                         f"and {int(table['model'].isna().sum())} without one: a per-model table "
                         f"holds one model; {fix}")
    model = names[0]
    if result_path(path.parent, model).name != path.name:
        raise SweepError(
            f"{path} holds rows of {model!r}, whose table is {result_path(path.parent, model).name}: "
            f"a stray copy or a renamed file; {fix}")
    return table, meta, model


def merge(
    out: str | os.PathLike,
    *,
    set_name: str | None = None,
    output: str | os.PathLike | None = None,
    command: str | None = None,
) -> tuple[Path, pd.DataFrame]:
    """Concatenate every per-model table of ``out`` (all shards) into ``output``.

    ``output`` defaults to ``DIR.csv`` beside ``out``. The metadata lists the models, the
    sweep commands that made the per-model files, any recorded failures and, when
    ``set_name`` is given, the set's models that are missing; rows are then in the set's
    order.

    Raises:
        SweepError: nothing to merge, a bad ``output``, or per-model files that are not
            whole tables of one model of the set with the same columns (all listed).
    """
    out = Path(out).expanduser().resolve()
    if not out.is_dir():
        what = "is a file" if out.exists() else "does not exist"
        raise SweepError(f"nothing to merge: {out} {what}; pass the sweep's --out folder")
    try:
        output = check_output(output if output is not None else merged_path(out), "--output",
                              folder=False, suffix=".csv").resolve()
    except OutputPathError as err:
        raise SweepError(f"{err} (the merged table)") from None
    if output.parent == out:
        raise SweepError(f"--output {output} is inside {out}, where the next merge would read it "
                         "as a model's table: write it elsewhere (default: beside the folder)")
    files = table_files(out)
    if not files:
        raise SweepError(f"nothing to merge: {out} holds no per-model .csv files (run the sweep)")
    expected: list[str] = []
    if set_name is not None:
        from ..modelsets import UnknownModelSetError, set_models

        try:
            expected = set_models(set_name)
        except (UnknownModelSetError, FileNotFoundError) as err:
            raise SweepError(str(err)) from None
    problems, read = [], []
    for f in files:
        try:
            read.append((f, *read_model_table(f)))
        except SweepError as err:
            problems.append(str(err))
    if expected:
        problems += [f"{f}: model {m!r} is not in set {set_name!r}; delete it, or merge with the "
                     "--models set it belongs to" for f, _, _, m in read if m not in expected]
    shapes = Counter(tuple(t.columns) for _, t, _, _ in read)
    if len(shapes) > 1:
        usual = list(shapes.most_common(1)[0][0])
        for f, t, _, _ in read:
            if list(t.columns) != usual:
                lost = [c for c in usual if c not in t]
                new = [c for c in t if c not in usual]
                problems.append(
                    f"{f} has other columns than the rest (missing {lost}, extra {new}"
                    f"{', other order' if not lost and not new else ''}): it was made by another "
                    f"worker or version; rerun its model with --force --only {t['model'].iloc[0]}")
    if problems:
        raise SweepError(f"not merged: {len(problems)} problem(s) in {out}:\n- "
                         + "\n- ".join(problems[:30]) + ("\n- ..." if len(problems) > 30 else ""))
    order = {m: i for i, m in enumerate(expected)}
    read.sort(key=lambda r: (order.get(r[3], len(order)), r[3]))
    table = pd.concat([t for _, t, _, _ in read], ignore_index=True)
    models = [m for _, _, _, m in read]
    metas = [meta for _, _, meta, _ in read]
    failures = sorted(p.stem for p in (out / "failures").glob("*.json"))
    command = command or shlex.join(["python", "-m", "lielib.book.sweep", *sys.argv[1:]])
    rel = [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f, *_ in read]
    meta = metadata(
        command=command,
        produced_by="lielib.book.sweep",
        sweep_commands=sorted({m.get("command") for m in metas if m.get("command")}),
        per_model_files=rel,
        models=models,
        set=set_name,
        missing=[m for m in expected if m not in set(models)],
        failures=failures,
        per_model_created_utc=[m.get("created_utc") for m in metas],
        per_model_csv_sha256=[m.get("csv_sha256") for m in metas],
        seed=next((m.get("seed") for m in metas if m.get("seed") is not None), None),
    )
    write_table(output, table, meta)
    return output, table
