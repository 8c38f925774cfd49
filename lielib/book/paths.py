"""Where the book's files live, and the one error for "not available on this machine".

* :data:`ROOT` / :func:`repo_root`: the checkout (``pyproject.toml`` beside ``lielib/``).
* :func:`cache_dir`: checkpoints and other large files outside git, ``$LIELIB_CACHE``
  else ``~/.cache/lielib``.
* :func:`safe_name`: a model name as a file name (``a/b`` -> ``a__b``).
* :class:`NotAvailableError`: the base of every "missing here" error (data, weights,
  checkpoints, results). Code that may skip work catches this class and nothing else,
  so any other error fails loudly.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ROOT", "NotAvailableError", "cache_dir", "repo_root", "safe_name"]

ROOT = Path(__file__).resolve().parents[2]
"""The checkout that holds this copy of lielib."""


class NotAvailableError(Exception):
    """Something a computation needs is not available on this machine.

    Subclasses name what is missing (a dataset, pretrained weights, a trained checkpoint,
    a results file) and their message says how to obtain it. Only this error may be turned
    into a skip, and every skip is printed and recorded in the results metadata.
    """


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The checkout holding ``pyproject.toml`` and ``lielib/``, searching up from ``start``.

    Chapters run with their own folder as working directory (the book build, papermill),
    so they locate ``results/`` through this; ``start`` defaults to the working directory.

    Raises:
        FileNotFoundError: no checkout above ``start``.
    """
    start = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "lielib").is_dir():
            return folder
    raise FileNotFoundError(f"no lielib checkout above {start}; run the chapter inside the repo")


def cache_dir(*parts: str) -> Path:
    """The cache folder for large files kept out of git, joined with ``parts``.

    ``$LIELIB_CACHE/<parts...>`` when the variable is set, else
    ``$XDG_CACHE_HOME/lielib/<parts...>`` (``~/.cache/lielib``): outside the checkout, so
    trained checkpoints survive a fresh clone and serve every checkout of the machine.
    Nothing is created.
    """
    base = os.environ.get("LIELIB_CACHE")
    if base:
        return Path(base).expanduser().joinpath(*parts)
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser().joinpath("lielib", *parts)


def safe_name(name: str) -> str:
    """A model name as one file-name component: ``/`` (and the OS separator) become ``__``.

    ``"timm/vit_small.augreg"`` -> ``"timm__vit_small.augreg"``; names without a slash are
    unchanged, so existing results files keep their names.

    Raises:
        ValueError: the name is empty, ``.`` or ``..``, or holds a NUL character.
    """
    out = str(name).replace("/", "__").replace(os.sep, "__")
    if out in ("", ".", "..") or "\0" in out:
        raise ValueError(f"{name!r} cannot be used as a file name")
    return out
