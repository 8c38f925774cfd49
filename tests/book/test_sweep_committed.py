"""The committed per-model results: each folder merges into its committed table, and every
command recorded in their metadata names a module and files that exist today.

A per-model folder is ``results/.../DIR`` with its merged table ``DIR.csv`` beside it; the
merged table's command says which tool merges it (the sweep, or the zoo's measurement).
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lielib.book import sweep
from lielib.book.results import ROOT, meta_path, read_table

FOLDERS = sorted(d for d in (ROOT / "results").rglob("*")
                 if d.is_dir() and d.with_name(d.name + ".csv").is_file())
"""Every per-model folder under ``results/``."""


def _merge_tool(folder: Path) -> str:
    return json.loads(meta_path(folder.with_name(folder.name + ".csv")).read_text())["command"]


def test_the_sweeps_folders_are_found() -> None:
    assert ROOT / "results" / "architectures" / "lite" in FOLDERS


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_committed_per_model_folder_merges_into_its_table(folder: Path, tmp_path: Path) -> None:
    """Merging a copy of the folder gives the committed merged table's rows, number for number."""
    copy = tmp_path / folder.name
    copy.mkdir()
    for f in folder.iterdir():
        if f.is_file() and not f.name.startswith("."):
            shutil.copy(f, copy / f.name)
    committed, meta = read_table(folder.with_name(folder.name + ".csv"))
    command = _merge_tool(folder)
    if command.startswith("python -m lielib.book.sweep merge"):
        _, merged = sweep.merge(copy, set_name=meta.get("set"))
    elif command.startswith("python -m lielib.book.zoo_measure merge"):
        from lielib.book import zoo_measure

        merged = zoo_measure.merge(copy)
    else:
        pytest.fail(f"{folder}.csv names no known merge command: {command!r}")
    pd.testing.assert_frame_equal(merged.reset_index(drop=True), committed, check_exact=True)
    merged_back, _ = read_table(copy.with_name(copy.name + ".csv"))
    pd.testing.assert_frame_equal(merged_back, committed, check_exact=True)


def _commands(folder: Path) -> list[str]:
    metas = [meta_path(folder.with_name(folder.name + ".csv")),
             *sorted(folder.glob("[!.]*.meta.json"))]
    return sorted({json.loads(m.read_text())["command"] for m in metas})


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda d: str(d.relative_to(ROOT)))
def test_recorded_commands_name_modules_and_files_that_exist(folder: Path) -> None:
    for command in _commands(folder):
        words = shlex.split(command)
        assert words[:2] == ["python", "-m"], f"{folder}: {command!r} is not a lielib command"
        assert importlib.util.find_spec(words[2]) is not None, f"{folder}: no module {words[2]}"
        for word in words[3:]:
            if word.endswith(".py"):
                assert (ROOT / word).is_file(), f"{folder}: {command!r} names a missing {word}"


@pytest.mark.parametrize("folder", [d for d in FOLDERS if _merge_tool(d).startswith(
    "python -m lielib.book.sweep merge")], ids=lambda d: str(d.relative_to(ROOT)))
def test_recorded_sweep_commands_pass_the_sweeps_checks(folder: Path, monkeypatch) -> None:
    """Each per-model table's command, parsed as the sweep would, checks out before any kernel."""
    from lielib.book.sweep.cli import _parser

    monkeypatch.chdir(ROOT)
    for command in _commands(folder):
        words = shlex.split(command)
        assert words[:3] == ["python", "-m", "lielib.book.sweep"], command
        if words[3] == "merge":
            continue
        args = _parser().parse_args(words[3:])
        models, _, _ = sweep.shard_todo(args.chapter, args.models, only=args.only,
                                        params=dict(args.p or []))
        assert models
        assert Path(args.out).resolve() == folder
