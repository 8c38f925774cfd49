"""Results files: tidy tables with their metadata, written as one unit.

Every table ``results/<chapter>/<name>.csv`` has a sidecar ``<name>.meta.json`` that
says how it was made: the command, versions, seed, device, date, models and tags, and the
table's SHA-256 (``csv_sha256``). :func:`read_table` accepts a table only together with
metadata that carries its hash, so a table edited by hand, copied without its metadata or
left from another run is refused, with what to do.

The pair is replaced as one unit although it is two files. Both are written to
temporary files in the same folder first; then, under an exclusive lock on the folder:

1. the new metadata goes into place holding, under ``replaces``, the old pair's metadata
   (whose ``csv_sha256`` is the old table's hash);
2. the new table goes into place;
3. the new metadata goes into place again, without ``replaces``.

Each step is an ``os.replace``, so a writer killed at any moment leaves either the old
pair (before step 2: the table's hash is the one in ``replaces``, and the reader returns
that metadata) or the new pair (after it). Readers hold a shared lock while they read
the two files. Metadata is strict JSON: NaN and infinities are written as ``null``,
arrays, sets and NumPy scalars as lists and numbers.
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
    "OutputPathError",
    "ResultsMismatchError",
    "UnreadableResultsError",
    "atomic_path",
    "atomic_write_text",
    "check_output",
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

REPLACES = "replaces"
"""The metadata key that holds the old pair's metadata while a table is being replaced."""


class MissingResultsError(NotAvailableError, FileNotFoundError):
    """A results file a chapter needs does not exist (or was made with other parameters)."""


class UnreadableResultsError(ValueError):
    """A results file exists but cannot be read or trusted; the message names it and says what to do."""


class ResultsMismatchError(UnreadableResultsError):
    """A table and its ``.meta.json`` do not belong together: the metadata is missing, has
    no ``csv_sha256``, or holds another table's hash."""


class OutputPathError(ValueError):
    """An output path cannot take what a command would write there (checked before any work)."""


@contextlib.contextmanager
def _folder_lock(folder: Path, *, exclusive: bool) -> Iterator[None]:
    """``flock`` on the folder itself: writers exclusive, readers shared; no lock file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _set_order(value: Any) -> tuple:
    return (type(value).__name__, value)


def _strict(obj: Any) -> Any:
    """``obj`` as plain JSON values: NaN and infinities as None; arrays, tensors, pandas
    series, tuples as lists; sets as sorted lists; NumPy scalars as Python numbers;
    dates as ISO text; paths as text; dictionary keys as text."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(_strict(k)): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        try:
            items = sorted(obj, key=_set_order)
        except TypeError:
            items = sorted(obj, key=repr)
        return [_strict(v) for v in items]
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (np.ndarray, pd.Series, pd.Index)) or (
            type(obj).__module__ == "torch" and hasattr(obj, "tolist")):
        return _strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


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


def check_output(path: str | os.PathLike, what: str, *, folder: bool = True,
                 suffix: str | None = None) -> Path:
    """``path`` made absolute, after checking that a command can write there; creates nothing.

    Every command line of the book runs this on its output paths before any work, so a
    bad ``--out`` fails at once instead of after an hour of computing.

    Args:
        what: how the user gave the path (``"--out"``), for the message.
        folder: ``path`` is a folder (created if missing) rather than a file.
        suffix: the file's required suffix (``".json"``).

    Raises:
        OutputPathError: a folder that is a file, a file that is a folder or lacks
            ``suffix``, a parent that is a file, or a nearest existing folder that is
            not writable.
    """
    path = Path(path).expanduser().absolute()
    name = "folder" if folder else "file"
    if folder and path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file: pass a folder (it is created if missing)")
    if not folder:
        if path.is_dir():
            raise OutputPathError(f"{what} {path} is a folder: pass a file name such as "
                                  f"{path / ('results' + (suffix or ''))}")
        if suffix is not None and path.suffix != suffix:
            raise OutputPathError(f"{what} {path}: the output is a {suffix} file; pass a name "
                                  f"ending in {suffix}")
    start = path if folder else path.parent
    for parent in (start, *start.parents):
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{what} {path} is inside {parent}, which is a file: pass "
                                      f"a {name} in a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(f"{what} {path}: {parent} is not writable; pass a {name} "
                                      "you can write to")
            break
    return path


def _temporary(path: Path, data: bytes | None = None) -> Path:
    """A new temporary file beside ``path`` named after it and this process (readable by
    all), holding ``data`` (flushed to disk) when given; stale ones of dead writers go first."""
    prefix = f".{path.stem}."
    remove_stale_temporaries(path.parent, prefix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}.",
                               suffix=f".tmp{path.suffix}")
    with os.fdopen(fd, "wb") as fh:
        if data is not None:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates files readable by their owner only
    return Path(tmp)


def _rename(src: Path, dst: Path) -> None:
    """One step of a replacement: ``os.replace``, then the folder's entry made durable."""
    os.replace(src, dst)
    fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    Readers see either the old file or the complete new one, never a partial write. The
    temporary name holds the writer's process id, so the leftovers of a killed writer
    are removed by the next write of the same file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _writer_pid(name: str, prefix: str | None) -> str:
    """The process id in a temporary's name ``.<stem>.<pid>.<random>.tmp<suffix>``."""
    if prefix is not None:
        return name[len(prefix):].split(".", 1)[0]
    parts = name[1:name.rindex(".tmp")].rsplit(".", 2)  # mkstemp's random part has no dot
    return parts[1] if len(parts) == 3 else ""


def remove_stale_temporaries(folder: str | os.PathLike, prefix: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` whose writing process has died.

    With ``prefix``, those of one file (``<prefix><pid>.*.tmp*``); without, every
    ``.<name>.<pid>.<random>.tmp*`` of the folder (a sweep clears its results folder so:
    a writer killed after the table was in place leaves its last metadata temporary).
    """
    removed = []
    for f in Path(folder).glob(f"{glob.escape(prefix or '.')}*.tmp*"):
        pid = _writer_pid(f.name, prefix)
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
    """Strict JSON text (``allow_nan=False``): NaN and infinities become ``null``, arrays
    and tuples lists, sets sorted lists, NumPy scalars numbers."""
    return json.dumps(_strict(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write strict JSON atomically (NaN and infinities become ``null``)."""
    return atomic_write_text(path, dumps_strict(obj))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON results file.

    Raises:
        MissingResultsError: the file does not exist.
        UnreadableResultsError: it is not UTF-8 JSON (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise MissingResultsError(f"{path} does not exist")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UnreadableResultsError(
            f"{path} is not a JSON file ({type(err).__name__}: {err}); restore it from git "
            "(git restore <file>) or rerun the command that made it") from None


def _table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its index as columns, unless the index is plain row numbers.

    Row numbers (an unnamed integer index, also one left by filtering) are not stored;
    any other index (named, like ``lee``'s ``image``, or holding labels) becomes columns.
    """
    index = frame.index
    if all(n is None for n in index.names) and (
            len(index) == 0 or (index.nlevels == 1 and pd.api.types.is_integer_dtype(index.dtype))):
        return frame
    try:
        return frame.reset_index()
    except ValueError as err:
        raise ValueError(f"the frame's index {list(index.names)} cannot be stored as columns "
                         f"({err}): rename the index or drop it with reset_index(drop=True)") from None


def _readable_meta(path: Path) -> dict | None:
    """The metadata of the pair at ``path`` as :func:`read_table` would accept it, else None."""
    mpath = meta_path(path)
    try:
        data, meta_data = path.read_bytes(), mpath.read_bytes()
        return _verified(path, data, meta_data, None)
    except (OSError, UnreadableResultsError):
        return None


def write_table(path: str | os.PathLike, frame: pd.DataFrame, meta: dict) -> Path:
    """Write ``frame`` as CSV and ``meta`` beside it as one unit.

    A killed writer leaves the old pair or the new one (see the module docstring); the
    metadata gets ``rows``, ``columns`` and the table's ``csv_sha256``. A named index
    (or one of labels) is stored as columns; plain row numbers are not.
    """
    path = Path(path)
    if path.suffix != ".csv":
        raise ValueError(f"results tables are .csv files, got {path}")
    if not isinstance(frame, pd.DataFrame) or not isinstance(meta, dict):
        raise TypeError(f"write_table({path}) needs a pandas DataFrame and a metadata dict, got "
                        f"{type(frame).__name__} and {type(meta).__name__}")
    if REPLACES in meta:
        raise ValueError(f"write_table({path}): the metadata key {REPLACES!r} is reserved for "
                         "the replacement of a table; rename it")
    frame = _table_frame(frame)
    data = frame.to_csv(index=False).encode()
    meta = dict(meta)
    meta.setdefault("rows", len(frame))
    meta.setdefault("columns", [str(c) for c in frame.columns])
    meta["csv_sha256"] = _sha256(data)
    final = dumps_strict(meta).encode()
    mpath = meta_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporaries: list[Path] = []
    try:
        with _folder_lock(path.parent, exclusive=True):
            old = _readable_meta(path)
            temporaries.append(_temporary(path, data))
            if old is None:  # nothing readable to keep: metadata, then the table
                temporaries.append(_temporary(mpath, final))
                _rename(temporaries[-1], mpath)
                _rename(temporaries[0], path)
            else:
                temporaries.append(_temporary(mpath, dumps_strict({**meta, REPLACES: old}).encode()))
                temporaries.append(_temporary(mpath, final))
                _rename(temporaries[1], mpath)  # 1: the new metadata, still vouching for the old table
                _rename(temporaries[0], path)  # 2: the new table
                _rename(temporaries[2], mpath)  # 3: the new metadata alone
    finally:
        for tmp in temporaries:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return path


def _fix(path: Path, how: str | None) -> str:
    mpath = meta_path(path)
    again = f"run: {how}" if how else "run the command in its metadata"
    return (f"Recompute it ({again}; in a chapter, recompute=True), or restore both files "
            f"from git (git restore {path} {mpath})")


def _verified(path: Path, data: bytes, meta_data: bytes | None, how: str | None) -> dict:
    """The metadata that vouches for the table bytes ``data``, or an error saying what to do."""
    mpath = meta_path(path)
    if meta_data is None:
        raise ResultsMismatchError(
            f"{path} has no metadata {mpath.name}, so nothing shows which command made it or "
            f"that it was not edited by hand. {_fix(path, how)}.")
    try:
        meta = json.loads(meta_data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ResultsMismatchError(f"{mpath} is not valid JSON ({err}). {_fix(path, how)}.") from None
    if not isinstance(meta, dict) or not meta.get("csv_sha256"):
        raise ResultsMismatchError(
            f"{mpath} has no csv_sha256 (the table's hash), so nothing shows that {path.name} "
            f"is the table it describes and not one edited by hand. {_fix(path, how)}.")
    digest = _sha256(data)
    if meta["csv_sha256"] == digest:
        meta.pop(REPLACES, None)  # a writer killed after the table was in place
        return meta
    old = meta.get(REPLACES)
    if isinstance(old, dict) and old.get("csv_sha256") == digest:
        return old  # a writer killed before the table was in place: the old pair
    raise ResultsMismatchError(
        f"{path} does not match its metadata {mpath.name} (the table's SHA-256 differs: "
        "the two files come from different runs, or the table was edited by hand). "
        f"{_fix(path, how)}.")


def read_table(path: str | os.PathLike, *, how: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Read a table and the metadata that carries its hash.

    Args:
        how: the command that produces the table, put in the messages.

    Raises:
        MissingResultsError: the table is missing.
        ResultsMismatchError: its metadata is missing, has no ``csv_sha256`` or another
            table's; the message says how to recompute or restore the pair.
        UnreadableResultsError: the file is a folder, not UTF-8 text, or not a CSV.
    """
    path = Path(path)
    if not path.exists():
        hint = f" Produce it with: {how}" if how else ""
        raise MissingResultsError(f"results file {path} does not exist.{hint}")
    if path.is_dir():
        raise UnreadableResultsError(f"results table {path} is a folder, not a .csv file")
    mpath = meta_path(path)
    with _folder_lock(path.parent, exclusive=False):
        data = path.read_bytes()
        meta_data = mpath.read_bytes() if mpath.exists() else None
    meta = _verified(path, data, meta_data, how)
    try:
        frame = pd.read_csv(io.StringIO(data.decode("utf-8")))
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UnreadableResultsError(
            f"{path} is not a UTF-8 CSV table ({type(err).__name__}: {err}). "
            f"{_fix(path, how)}.") from None
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
        ResultsMismatchError: the table has no metadata vouching for it (none, no
            ``csv_sha256``, another table's): it is never read silently.
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
    """A short Markdown provenance box for the results files a chapter read.

    A table is described by the metadata :func:`read_table` accepts for it; one without
    is shown as unverified.
    """
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
        meta: Any = {}
        if p.suffix == ".csv":
            meta = _readable_meta(p)
            if meta is None:
                lines.append(f"- `{shown}`: **unverified**: its metadata is missing or does not "
                             "carry its hash.")
                continue
        elif p.suffix == ".json":
            try:
                meta = json.loads(p.read_text()).get("metadata", {})
            except (ValueError, AttributeError, UnicodeDecodeError):
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
