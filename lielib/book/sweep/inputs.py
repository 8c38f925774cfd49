"""A sweep's inputs, checked before anything runs: the worker's parameters, typed ``-p``
values, the model set and the results folder.

Every check raises :class:`SweepError` with a message that names the problem and what to
do about it, so a bad command fails at once instead of after (or inside) a kernel.

The kernel runs in the worker's folder, so the folders a parameter names
(:data:`FOLDER_PARAMETERS`) are made absolute here, against the folder the sweep is
started from, and must exist; ``actions`` must name known actions, each once.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FOLDER_PARAMETERS",
    "RESERVED",
    "SweepError",
    "chapter_parameters",
    "check_actions",
    "check_folder",
    "coerce_parameter",
    "shard_todo",
]

RESERVED = ("models", "source", "out", "command")
"""Parameters the sweep sets itself; a worker chapter must declare ``models`` and ``out``."""
FOLDER_PARAMETERS = ("imagenet", "data_root")
"""Worker parameters that name a folder: a relative one is taken from where the sweep runs."""
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class SweepError(ValueError):
    """Bad sweep input: unknown set or model, bad shard, parameter or folder, bad results."""


def chapter_parameters(chapter: str | os.PathLike) -> dict[str, Any]:
    """The names and default values of the chapter's ``parameters`` cell.

    A default that is not a Python literal (an expression) is recorded as ``None``.

    Raises:
        SweepError: no such file, or no cell tagged ``parameters``.
    """
    import jupytext

    chapter = Path(chapter)
    if not chapter.is_file():
        raise SweepError(f"chapter {chapter} does not exist (or is not a file): pass the path of "
                         "a jupytext .py worker such as chapters/workers/measure_model.py")
    nb = jupytext.read(chapter)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise SweepError(
            f"{chapter} has no cell tagged `parameters` (write `# %% tags=[\"parameters\"]`)"
        )
    out: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    try:
                        out[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[t.id] = None
    return out


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a JSON list", dict: "a JSON object"}.get(type(value), type(value).__name__)


def coerce_parameter(key: str, value: Any, default: Any) -> Any:
    """A ``-p key value`` as the type of the parameter's default in the worker.

    Booleans accept ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case); integers
    need an integer; floats a number; lists a JSON list whose items have the type of the
    default's items; dicts a JSON object; strings are kept as given. A parameter whose
    default is ``None`` (or an expression) takes JSON when the value parses, else the text.

    Raises:
        SweepError: the value does not fit, naming the parameter, its default and an example.
    """
    def bad(extra: str = "") -> SweepError:
        return SweepError(f"-p {key} {value!r}: {key} is {_kind(default)} (its default is "
                          f"{default!r}){extra}; pass e.g. -p {key} {_example(default)}")

    if default is None:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(value, str):
        text = value.strip()
        if isinstance(default, bool):
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise bad(f" (one of {'/'.join(_TRUE + _FALSE)})")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            raise bad() from None
    else:
        parsed = value
    if isinstance(default, bool):
        if isinstance(parsed, bool):
            return parsed
        raise bad()
    if isinstance(default, int):
        if isinstance(parsed, int) and not isinstance(parsed, bool):
            return parsed
        raise bad()
    if isinstance(default, float):
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            return float(parsed)
        raise bad()
    if isinstance(default, (list, tuple)):
        if not isinstance(parsed, list):
            raise bad()
        kinds = {type(v) for v in default}
        if len(kinds) == 1 and any(type(v) not in kinds for v in parsed):
            raise bad(f" whose items are each {_kind(default[0])}")
        return parsed
    if isinstance(default, dict):
        if not isinstance(parsed, dict):
            raise bad()
        return parsed
    return parsed


def _example(default: Any) -> str:
    if isinstance(default, bool):
        return "false" if default else "true"
    if isinstance(default, (int, float)):
        return json.dumps(default)
    return "'" + json.dumps(default) + "'"


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` made absolute, after checking that it is (or can become) a writable folder.

    Raises:
        SweepError: ``path`` or one of its parents is a file, or it cannot be written
            (:func:`lielib.book.results.check_output`).
    """
    from ..results import OutputPathError, check_output

    try:
        return check_output(path, what).resolve()
    except OutputPathError as err:
        raise SweepError(f"{err} (one table per model goes in it)") from None


def check_actions(actions: Any, what: str = "actions") -> list[str]:
    """``actions`` as a list, after checking that it names known actions, each once.

    Raises:
        SweepError: not a non-empty list of names, an unknown action (the message lists
            the known ones), or an action given twice (it would be two columns of one name).
    """
    from lielib import get_action

    if isinstance(actions, str) or not isinstance(actions, (list, tuple)) or not actions:
        raise SweepError(f"{what} {actions!r}: pass a non-empty list of action names, "
                         """e.g. -p actions '["rotate", "scale"]'""")
    twice = sorted({a for a in actions if list(actions).count(a) > 1}, key=str)
    if twice:
        raise SweepError(f"{what} {list(actions)!r} names {', '.join(map(str, twice))} more than "
                         "once: each action is one column of the tables; list it once")
    for a in actions:
        try:
            get_action(a)
        except ValueError as err:
            raise SweepError(f"{what}: {err}") from None
    return list(actions)


def _folder_parameter(key: str, value: Any) -> Any:
    """A folder parameter made absolute against the working directory, checked to exist."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise SweepError(f"-p {key} {value}: folder {path} {what} (a relative path is taken "
                         "from the folder the sweep is started in)")
    return str(path)


def shard_todo(
    chapter: str | os.PathLike,
    set_name: str,
    *,
    only: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """Check a sweep's inputs: the selected models, the typed extra parameters, the declared ones.

    Folder parameters (:data:`FOLDER_PARAMETERS`) come back absolute.

    Raises:
        SweepError: unknown set or model, unknown or ill-typed parameter; a folder
            parameter that is no folder; unknown or repeated actions; a worker without
            ``models``/``out``; the ``paper`` sets without an ImageNet folder.
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
    except (UnknownModelSetError, FileNotFoundError) as err:
        raise SweepError(str(err)) from None
    if only:
        models = [m for m in models if m in set(only)]
    extra = {}
    for key, value in (params or {}).items():
        if key in RESERVED:
            raise SweepError(f"-p {key}: the sweep sets `{key}` itself (use --models/--only "
                             "for the models and --out for the folder)")
        if key not in declared:
            raise SweepError(f"-p {key}: {Path(chapter).name} has no parameter {key!r}; "
                             f"it declares {sorted(declared)}")
        extra[key] = coerce_parameter(key, value, declared[key])
        if key in FOLDER_PARAMETERS:
            extra[key] = _folder_parameter(key, extra[key])
        if key == "actions":
            extra[key] = check_actions(extra[key], "-p actions")
    if set_name.startswith("paper") and not extra.get("imagenet"):
        raise SweepError(
            "the paper set needs an ImageNet validation folder: add `-p imagenet FOLDER` "
            "(an ImageFolder <folder>/<wnid>/*.JPEG with the 1000 ILSVRC2012 classes)"
        )
    return models, extra, declared
