"""One shard of a sweep: its models in one papermill kernel; per-model files and failures.

A worker chapter declares ``models`` (a list) and ``out`` (a folder) in its ``parameters``
cell and measures each model in turn through :func:`run_models`, which writes
``out/<model>.csv`` atomically and records a failing model in
``out/failures/<model>.json`` before going on. :func:`run_sweep` starts that kernel for the
shard's models that have no table yet; a model that kills the kernel is recorded and the
rest of the shard goes on in a new kernel.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..paths import cache_dir
from ..results import (
    UnreadableResultsError,
    metadata,
    read_table,
    remove_stale_temporaries,
    write_json,
)
from .inputs import SweepError, check_folder, shard_todo

__all__ = [
    "failure_path",
    "is_complete",
    "notebook_dir",
    "parse_shard",
    "result_path",
    "run_models",
    "run_sweep",
    "shard",
]

ROOT = Path(__file__).resolve().parents[3]
_STARTED = "started but did not finish: the process measuring it died (killed, out of memory?)"


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


def is_complete(out: str | os.PathLike, model: str) -> bool:
    """Whether ``model`` is done: its table and metadata exist and match (``csv_sha256``).

    A table without metadata that carries its hash (none, none recorded, another table's)
    counts as not done, so the sweep measures the model again.
    """
    path = result_path(out, model)
    if not path.is_file():
        return False
    try:
        _, meta = read_table(path)
    except (UnreadableResultsError, OSError, ValueError):
        return False
    return isinstance(meta, dict) and bool(meta.get("csv_sha256"))


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
    if isinstance(models, str) or not all(isinstance(m, str) for m in models):
        raise TypeError(f"models must be a list of model names, got {models!r} "
                        "(with papermill: -p models '[\"resnet-small\"]')")
    if not out:
        raise ValueError("out is empty: pass the results folder (one table per model)")
    out = Path(out)
    status: dict[str, list[str]] = {"done": [], "failed": []}
    for model in models:
        target = result_path(out, model)
        _record_failure(out, model, _STARTED, command, stage="started")
        start = time.perf_counter()
        try:
            work(model, target)
            if not is_complete(out, model):
                raise RuntimeError(f"measuring {model} did not write {target} with its metadata "
                                   "(write it with lielib.book.results.write_table)")
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


def notebook_dir(chapter: Path, out: Path) -> Path:
    """Where executed worker notebooks (and submitit's logs) are kept: the cache."""
    return cache_dir("sweeps", f"{Path(chapter).stem}-{Path(out).name}")


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
            if written(m) and is_complete(out, m):  # killed after its table was in place
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
    params: dict[str, Any] | None = None,
    force: bool = False,
    command: str | None = None,
    progress: bool = True,
    kernel_per_model: bool = False,
) -> dict[str, list[str]]:
    """Measure every model of one shard that has no table yet, in one kernel.

    Every input is checked before a kernel starts (:func:`.inputs.shard_todo`, the
    ``out`` folder); ``params`` values are typed like the worker's defaults.

    Args:
        kernel_per_model: one kernel per model instead (isolation; costs a kernel start,
            imports and set-up per model).

    Returns:
        ``{"done": [...], "skipped": [...], "failed": [...]}`` for this shard.

    Raises:
        SweepError: bad input (set, model, parameter, folder, missing checkpoints).
    """
    from ..modelsets import preflight

    chapter = Path(chapter).resolve()
    models, extra, declared = shard_todo(chapter, set_name, only=only, params=params)
    out = check_folder(out if out is not None else ROOT / "results" / chapter.stem / set_name,
                       "--out")
    command = command or shlex.join(["python", "-m", "lielib.book.sweep", *sys.argv[1:]])
    if out.is_dir():  # what writers killed in an earlier run left
        remove_stale_temporaries(out)
    mine = shard(models, *shard_spec)
    todo = [m for m in mine if force or not is_complete(out, m)]
    for m in mine:  # a complete table has no failure record: one left by an interrupted
        if m not in todo:  # --force rewrite is stale, the old table stands
            failure_path(out, m).unlink(missing_ok=True)
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
    done = [m for m in todo if is_complete(out, m) and _record(out, m) is None]
    return {"done": done, "skipped": [m for m in mine if m not in todo],
            "failed": [m for m in todo if m not in done]}
