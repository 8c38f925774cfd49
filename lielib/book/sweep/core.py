"""One shard of a sweep: its models in one papermill kernel; per-model files, failures, merge.

A worker chapter declares ``models`` (a list) and ``out`` (a folder) in its ``parameters``
cell and measures each model in turn through :func:`run_models`, which writes
``out/<model>.csv`` atomically and records a failing model in
``out/failures/<model>.json`` before going on. :func:`run_sweep` starts that kernel for the
shard's models that have no table yet; a model that kills the kernel is recorded and the
rest of the shard goes on in a new kernel.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..results import meta_path, metadata, write_json, write_table

__all__ = [
    "RESERVED",
    "SweepError",
    "chapter_parameters",
    "failure_path",
    "merge",
    "parse_shard",
    "result_path",
    "run_models",
    "run_sweep",
    "shard",
    "shard_todo",
]

ROOT = Path(__file__).resolve().parents[3]
RESERVED = ("models", "source", "out", "command")
"""Parameters the sweep sets itself; a worker chapter must declare ``models`` and ``out``."""
_STARTED = "started but did not finish: the process measuring it died (killed, out of memory?)"


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
    """The models of shard ``i`` of ``n``: positions ``k`` with ``k mod n = i``.

    Over ``i = 0..n-1`` the shards partition ``models`` (each exactly once), whatever the
    machine or the order the shards run in.
    """
    if n < 1 or not 0 <= i < n:
        raise SweepError(f"shard {i}/{n}: need n >= 1 and 0 <= i < n")
    return [m for k, m in enumerate(models) if k % n == i]


def result_path(out: str | os.PathLike, model: str) -> Path:
    """``out/<model>.csv`` (a ``/`` in the name becomes ``__``)."""
    return Path(out) / f"{model.replace('/', '__')}.csv"


def failure_path(out: str | os.PathLike, model: str) -> Path:
    """``out/failures/<model>.json``: why ``model`` has no table (removed once it has one)."""
    return Path(out) / "failures" / f"{model.replace('/', '__')}.json"


def _record_failure(out: Path, model: str, error: str, command: str | None, **extra: Any) -> None:
    write_json(failure_path(out, model), {
        "model": model, "error": error[:4000], **extra,
        "metadata": metadata(command=command),
    })


def run_models(
    models: Sequence[str],
    out: str | os.PathLike,
    work: Callable[[str, Path], Any],
    *,
    command: str | None = None,
) -> dict[str, list[str]]:
    """Inside a worker kernel: ``work(model, out/<model>.csv)`` for each model in turn.

    ``work`` must write the table (atomically, :func:`lielib.book.results.write_table`).
    Before a model starts, its failure record says it started, so a model that kills the
    process is on record; an exception is recorded with its traceback and the loop goes
    on; success removes the record.

    Returns:
        ``{"done": [...], "failed": [...]}``.
    """
    out = Path(out)
    status: dict[str, list[str]] = {"done": [], "failed": []}
    for model in models:
        target = result_path(out, model)
        _record_failure(out, model, _STARTED, command, stage="started")
        start = time.perf_counter()
        try:
            work(model, target)
            if not target.is_file():
                raise RuntimeError(f"measuring {model} did not write {target}")
        except Exception as err:  # noqa: BLE001 - record any failure and go on
            _record_failure(out, model, f"{type(err).__name__}: {err}".strip(), command,
                            stage="failed", traceback=traceback.format_exc()[-20000:],
                            seconds=round(time.perf_counter() - start, 2))
            status["failed"].append(model)
            print(f"FAILED {model}: {type(err).__name__}: {str(err)[:300]}", flush=True)
            continue
        failure_path(out, model).unlink(missing_ok=True)
        status["done"].append(model)
        print(f"done {model} in {time.perf_counter() - start:.1f} s", flush=True)
    return status


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


def notebook_dir(chapter: Path, out: Path) -> Path:
    """Where executed worker notebooks (and submitit's logs) are kept: the cache."""
    base = os.environ.get("LIELIB_CACHE")
    cache = Path(base).expanduser() if base else ROOT / "cache"
    return cache / "sweeps" / f"{Path(chapter).stem}-{Path(out).name}"


def shard_todo(
    chapter: str | os.PathLike,
    set_name: str,
    *,
    only: Sequence[str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Check a sweep's inputs: the selected models, the typed extra parameters, the declared ones.

    Raises:
        SweepError: unknown set, model or parameter; a worker without ``models``/``out``;
            the ``paper`` set without an ImageNet folder.
    """
    from ..modelsets import UnknownModelSetError, check_model, set_models

    declared = chapter_parameters(chapter)
    for name in ("models", "out"):
        if name not in declared:
            raise SweepError(f"{Path(chapter).name}'s parameters cell must declare `{name}` "
                             "(the list of models one kernel measures, and the results folder)")
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
            raise SweepError(f"-p {key}: {Path(chapter).name} has no parameter {key!r}; "
                             f"it declares {sorted(declared)}")
        extra[key] = _coerce(value, declared[key])
    if set_name.startswith("paper") and not extra.get("imagenet"):
        raise SweepError(
            "the paper set needs an ImageNet validation folder: add `-p imagenet FOLDER` "
            "(an ImageFolder <folder>/<wnid>/*.JPEG with the 1000 ILSVRC2012 classes)"
        )
    if set_name.startswith("paper") and not Path(extra["imagenet"]).is_dir():
        raise SweepError(
            f"ImageNet folder {extra['imagenet']} does not exist: pass the folder that holds "
            "the ILSVRC2012 validation images as <wnid>/*.JPEG (or its parent holding val/)"
        )
    return models, extra, declared


def _kernel(chapter: Path, nb_out: Path, params: dict[str, Any], progress: bool) -> None:
    import jupytext
    import papermill

    nb_out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        jupytext.read(chapter), str(nb_out), parameters=params, kernel_name="python3",
        language="python", progress_bar=False, cwd=str(chapter.parent), log_output=progress,
        stdout_file=sys.stdout if progress else None, stderr_file=sys.stderr if progress else None,
    )


def _record(out: Path, model: str) -> dict[str, Any] | None:
    path = failure_path(out, model)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _run_batch(chapter: Path, batch: list[str], out: Path, params: dict[str, Any],
               nb_path: Callable[[int], Path], command: str, progress: bool) -> None:
    """Measure ``batch`` in as few kernels as it takes: a kernel that dies costs one model."""
    attempt = 0
    while batch:
        for model in batch:  # a stale record must not read as this kernel's work
            failure_path(out, model).unlink(missing_ok=True)
        notebook = nb_path(attempt)
        error = None
        start = time.time() - 1.0  # file times can be as coarse as a second
        try:
            _kernel(chapter, notebook, {**params, "models": batch}, progress)
        except Exception as err:  # noqa: BLE001 - the kernel's failure is recorded per model
            error = f"{type(err).__name__}: {str(err)[-2000:]}".strip()

        def written(m: str, since: float = start) -> bool:
            path = result_path(out, m)
            return path.is_file() and path.stat().st_mtime >= since

        touched = [m for m in batch if written(m) or _record(out, m)]
        untouched = [m for m in batch if m not in touched]
        for m in touched:
            rec = _record(out, m)
            if rec is None or rec.get("stage") != "started":
                continue
            if written(m):  # killed after its table was in place: the table is whole
                failure_path(out, m).unlink(missing_ok=True)
            else:
                _record_failure(out, m, f"{_STARTED}; the kernel said {error}", command,
                                stage="kernel died", notebook=str(notebook))
        if untouched and (error is None or not touched):
            why = (f"the worker {chapter.name} failed before measuring it: {error}" if error
                   else f"the worker {chapter.name} ran but never measured it")
            for m in untouched:
                _record_failure(out, m, why, command, stage="worker", notebook=str(notebook))
            return
        batch, attempt = untouched, attempt + 1


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
    kernel_per_model: bool = False,
) -> dict[str, list[str]]:
    """Measure every model of one shard that has no table yet, in one kernel.

    Args:
        kernel_per_model: one kernel per model instead (isolation; costs a kernel start,
            imports and set-up per model).

    Returns:
        ``{"done": [...], "skipped": [...], "failed": [...]}`` for this shard.
    """
    from ..modelsets import preflight

    chapter = Path(chapter).resolve()
    models, extra, declared = shard_todo(chapter, set_name, only=only, params=params)
    out = (Path(out) if out is not None else ROOT / "results" / chapter.stem / set_name).resolve()
    command = command or shlex.join(["python", "-m", "lielib.book.sweep", *sys.argv[1:]])
    mine = shard(models, *shard_spec)
    todo = [m for m in mine if force or not result_path(out, m).is_file()]
    try:
        preflight(set_name, todo)
    except FileNotFoundError as err:
        raise SweepError(str(err)) from None
    run_params = {**extra, "out": str(out), "command": command, "source": set_name}
    run_params = {k: v for k, v in run_params.items() if k in declared}
    nb_dir = notebook_dir(chapter, out)
    i, n = shard_spec
    batches = [[m] for m in todo] if kernel_per_model else [todo] if todo else []
    for batch in batches:
        stem = batch[0].replace("/", "__") if kernel_per_model else f"shard-{i}-of-{n}"
        _run_batch(chapter, batch, out, run_params,
                   lambda k, s=stem: nb_dir / (f"{s}.ipynb" if k == 0 else f"{s}.retry{k}.ipynb"),
                   command, progress)
    done = [m for m in todo if result_path(out, m).is_file() and _record(out, m) is None]
    return {"done": done, "skipped": [m for m in mine if m not in todo],
            "failed": [m for m in todo if m not in done]}


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
        from ..modelsets import set_models

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
    rel = [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in files]
    meta = metadata(
        command=command,
        produced_by="lielib.book.sweep",
        sweep_commands=sweep_cmds,
        per_model_files=rel,
        models=models,
        set=set_name,
        missing=[m for m in expected if m.replace("/", "__") not in set(models)],
        failures=failures,
        per_model_created_utc=[m.get("created_utc") for m in metas],
        seed=next((m.get("seed") for m in metas if m.get("seed") is not None), None),
    )
    write_table(output, table, meta)
    return output, table
