"""Results files: tidy tables with their metadata, written atomically.

Every table ``results/<chapter>/<name>.csv`` has a sidecar ``<name>.meta.json`` that
says how it was made: the command, versions, seed, device, date, models and tags.
Both are written to a temporary file in the same folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file.

The pair is one unit: the metadata holds the table's SHA-256 (``csv_sha256``); writers
hold an exclusive lock on the folder while they replace the two files and readers a
shared one while they read them, and :func:`read_table` refuses a pair whose hash does
not match. Metadata is strict JSON: NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import glob
import hashlib
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .paths import ROOT, NotAvailableError, repo_root

__all__ = [
    "ROOT",  # re-exported from lielib.book.paths
    "MissingResultsError",
    "ResultsMismatchError",
    "atomic_path",
    "atomic_write_text",
    "dumps_strict",
    "meta_path",
    "metadata",
    "provenance_markdown",
    "read_json",
    "read_or_compute",
    "read_table",
    "record_skip",
    "remove_stale_temporaries",
    "repo_root",  # re-exported from lielib.book.paths
    "write_json",
    "write_table",
]

class MissingResultsError(NotAvailableError, FileNotFoundError):
    """A results file a chapter needs does not exist (or was made with other parameters)."""


class ResultsMismatchError(ValueError):
    """A table and its ``.meta.json`` do not belong together (their hash disagrees)."""


@contextlib.contextmanager
def _folder_lock(folder: Path, *, exclusive: bool) -> Iterator[None]:
    """``flock`` on the folder itself: writers exclusive, readers shared; no lock file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _strict(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None, NumPy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.generic) and not isinstance(obj, np.str_):
        obj = obj.item()
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "timm", "numpy", "pandas"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    from .. import __version__

    out["lielib"] = __version__
    return out


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def _device_name(device: Any) -> str:
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _invocation() -> str:
    """The running command line, with ``python -m lielib.x`` for lielib's own CLIs."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    package = Path(__file__).resolve().parents[1]
    if script is not None and script.suffix == ".py" and script.is_relative_to(package):
        parts = ("lielib", *script.relative_to(package).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__main__" else parts)
        return shlex.join(["python", "-m", module, *sys.argv[1:]])
    return shlex.join([sys.executable, *sys.argv])


def metadata(*, command: str | None = None, seed: int | None = None, device: Any = None, **extra) -> dict:
    """Metadata for a results file: command, versions, git commit, device, date, extras.

    ``command`` defaults to the running process's command line; pass the command a
    reader should run to regenerate the file when that differs (a chapter, a sweep).
    """
    meta = {
        "command": command if command is not None else _invocation(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "versions": _versions(),
        "device": _device_name(device),
        "seed": seed,
    }
    meta.update(extra)
    return meta


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    Readers see either the old file or the complete new one, never a partial write. The
    temporary name holds the writer's process id, so the leftovers of a killed writer
    are removed by the next write of the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.stem}."
    remove_stale_temporaries(path.parent, prefix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}.",
                               suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates files readable by their owner only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Delete ``<prefix><pid>.*.tmp*`` files in ``folder`` whose writing process has died."""
    removed = []
    for f in Path(folder).glob(f"{glob.escape(prefix)}*.tmp*"):
        pid = f.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            removed.append(f)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def meta_path(path: str | os.PathLike) -> Path:
    """The metadata sidecar of a results table: ``x.csv`` -> ``x.meta.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def dumps_strict(obj: Any) -> str:
    """Strict JSON text (``allow_nan=False``): NaN and infinities become ``null``."""
    return json.dumps(_strict(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write strict JSON atomically (NaN and infinities become ``null``)."""
    return atomic_write_text(path, dumps_strict(obj))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON results file.

    Raises:
        MissingResultsError: the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise MissingResultsError(f"{path} does not exist")
    return json.loads(path.read_text())


def write_table(path: str | os.PathLike, frame: pd.DataFrame, meta: dict) -> Path:
    """Write ``frame`` as CSV and ``meta`` beside it as one unit.

    Each file is replaced atomically; the folder's exclusive lock makes the pair one
    unit among concurrent writers, and ``csv_sha256`` in the metadata ties it to the table.
    """
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"results tables are .csv files, got {path}")
    if not isinstance(frame, pd.DataFrame) or not isinstance(meta, dict):
        raise TypeError(f"write_table({path}) needs a pandas DataFrame and a metadata dict, got "
                        f"{type(frame).__name__} and {type(meta).__name__}")
    text = frame.to_csv(index=False)
    meta = dict(meta)
    meta.setdefault("rows", len(frame))
    meta.setdefault("columns", [str(c) for c in frame.columns])
    meta["csv_sha256"] = _sha256(text)
    meta_text = dumps_strict(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(path.parent, exclusive=True):
        atomic_write_text(meta_path(path), meta_text)
        atomic_write_text(path, text)
    return path


def read_table(path: str | os.PathLike, *, how: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Read a table and its metadata.

    Raises:
        MissingResultsError: the table is missing; ``how`` (a command) is put in the
            message so that a reader knows how to produce it.
    """
    path = Path(path)
    if not path.exists():
        hint = f" Produce it with: {how}" if how else ""
        raise MissingResultsError(f"results file {path} does not exist.{hint}")
    mpath = meta_path(path)
    with _folder_lock(path.parent, exclusive=False):
        text = path.read_text()
        meta_text = mpath.read_text() if mpath.exists() else None
    try:
        meta = json.loads(meta_text) if meta_text is not None else {}
    except ValueError as err:
        raise ResultsMismatchError(f"{mpath} is not valid JSON ({err}); regenerate the table"
                                   + (f" with: {how}" if how else "")) from err
    digest = meta.get("csv_sha256") if isinstance(meta, dict) else None
    if digest is not None and digest != _sha256(text):
        raise ResultsMismatchError(
            f"{path} does not match its metadata {mpath.name} (the table's SHA-256 differs: "
            "the two files come from different runs, or the table was edited by hand). "
            "Regenerate them" + (f" with: {how}" if how else " with the command in the metadata"))
    return pd.read_csv(io.StringIO(text)), meta


def read_or_compute(
    path: str | os.PathLike,
    compute: Callable[[], object] | None = None,
    *,
    recompute: bool = False,
    how: str | None = None,
    stale: Callable[[dict], str | None] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Read a results table, recomputing it first only when asked: every chapter's way in.

    With ``recompute=True``, ``compute()`` runs first and must write ``path`` (with its
    metadata, through :func:`write_table`); otherwise nothing is computed or written, so
    building the book never changes ``results/``.

    Args:
        path: the ``.csv`` table.
        compute: writes the table; needed only with ``recompute=True``.
        recompute: recompute and overwrite the table before reading it.
        how: the command that regenerates the table, quoted when it is missing.
        stale: given the stored metadata, a reason why the table does not answer the
            question asked (e.g. other parameters), or None when it does.

    Returns:
        ``(frame, meta)`` as :func:`read_table`.

    Raises:
        MissingResultsError: the table is missing, or ``stale`` rejects it, and
            ``recompute`` is False.
        ValueError: ``recompute=True`` without ``compute``.
    """
    path = Path(path)
    if recompute:
        if compute is None:
            raise ValueError(f"recompute=True but nothing computes {path}")
        compute()
    frame, meta = read_table(path, how=how)
    reason = stale(meta) if stale is not None else None
    if reason:
        hint = f" Regenerate it with: {how}" if how else ""
        raise MissingResultsError(
            f"results file {path} does not match the request: {reason}. Set recompute=True "
            f"to recompute it.{hint}"
        )
    return frame, meta


def record_skip(skipped: list[str], what: str, err: BaseException) -> str:
    """Print that ``what`` is skipped because of ``err`` and append the reason to ``skipped``.

    ``skipped`` goes into the results metadata, so every skip is both shown and recorded.
    Only :class:`~lielib.book.paths.NotAvailableError` (missing data, weights, checkpoints
    or results) may be skipped: any other error is raised again.

    Returns:
        The recorded line, ``"<what>: <ErrorType>: <first line of the message>"``.
    """
    if not isinstance(err, NotAvailableError):
        raise err
    first = str(err).splitlines()[0] if str(err) else ""
    line = f"{what}: {type(err).__name__}: {first}"
    print(f"skipped {line}", file=sys.stderr, flush=True)
    skipped.append(line)
    return line


def provenance_markdown(paths: Iterable[str | os.PathLike], *, root: str | os.PathLike | None = None) -> str:
    """A short Markdown provenance box for the results files a chapter read."""
    root = Path(root) if root is not None else ROOT
    lines = ["```{admonition} Provenance", ":class: note", ""]
    for p in paths:
        p = Path(p)
        try:
            shown = p.resolve().relative_to(root)
        except ValueError:
            shown = p
        if not p.exists():
            lines.append(f"- `{shown}`: **missing**.")
            continue
        mpath = meta_path(p) if p.suffix == ".csv" else None
        meta = json.loads(mpath.read_text()) if mpath is not None and mpath.exists() else {}
        if not meta and p.suffix == ".json":
            try:
                meta = json.loads(p.read_text()).get("metadata", {})
            except (ValueError, AttributeError):
                meta = {}
        vtxt = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        parts = [f"- `{shown}`"]
        if meta.get("created_utc"):
            parts.append(f"made {meta['created_utc']}")
        if meta.get("device"):
            parts.append(f"on {meta['device']}")
        if meta.get("seed") is not None:
            parts.append(f"seed {meta['seed']}")
        if models := meta.get("models"):
            parts.append("models: " + ", ".join(map(str, models[:6]))
                         + (" ..." if len(models) > 6 else ""))
        if vtxt:
            parts.append(vtxt)
        lines.append("; ".join(parts) + ".")
        if meta.get("command"):
            lines.append(f"  Regenerate: `{meta['command']}`")
    lines.append("```")
    return "\n".join(lines)
