"""Results files: tidy tables with their metadata, written atomically.

Every table ``results/<chapter>/<name>.csv`` has a sidecar ``<name>.meta.json`` that
says how it was made: the command, versions, seed, device, date, models and tags.
Both are written to a temporary file in the same folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from .paths import ROOT, NotAvailableError, repo_root

__all__ = [
    "ROOT",  # re-exported from lielib.book.paths
    "MissingResultsError",
    "atomic_path",
    "atomic_write_text",
    "meta_path",
    "metadata",
    "provenance_markdown",
    "read_json",
    "read_or_compute",
    "read_table",
    "record_skip",
    "repo_root",  # re-exported from lielib.book.paths
    "write_json",
    "write_table",
]

class MissingResultsError(NotAvailableError, FileNotFoundError):
    """A results file a chapter needs does not exist (or was made with other parameters)."""


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

    Readers see either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates files readable by their owner only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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
    """Write ``frame`` as CSV and ``meta`` beside it, both atomically (metadata first)."""
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"results tables are .csv files, got {path}")
    meta = dict(meta)
    meta.setdefault("rows", len(frame))
    meta.setdefault("columns", [str(c) for c in frame.columns])
    write_json(meta_path(path), meta)
    atomic_write_text(path, frame.to_csv(index=False))
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
    frame = pd.read_csv(path)
    mpath = meta_path(path)
    meta = json.loads(mpath.read_text()) if mpath.exists() else {}
    return frame, meta


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
        versions = meta.get("versions", {})
        vtxt = ", ".join(f"{k} {v}" for k, v in versions.items())
        parts = [f"- `{shown}`"]
        if meta.get("created_utc"):
            parts.append(f"made {meta['created_utc']}")
        if meta.get("device"):
            parts.append(f"on {meta['device']}")
        if meta.get("seed") is not None:
            parts.append(f"seed {meta['seed']}")
        if meta.get("models"):
            models = meta["models"]
            shown_models = ", ".join(map(str, models[:6])) + (" ..." if len(models) > 6 else "")
            parts.append(f"models: {shown_models}")
        if vtxt:
            parts.append(vtxt)
        lines.append("; ".join(parts) + ".")
        if meta.get("command"):
            lines.append(f"  Regenerate: `{meta['command']}`")
    lines.append("```")
    return "\n".join(lines)
