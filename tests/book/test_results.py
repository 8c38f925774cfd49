import json
import os

import pandas as pd
import pytest

from lielib.book.results import (
    MissingResultsError,
    atomic_write_text,
    meta_path,
    metadata,
    provenance_markdown,
    read_table,
    write_table,
)


def test_table_round_trip_with_metadata(tmp_path):
    frame = pd.DataFrame({"image": [0, 1], "rotate": [0.1, 0.2]})
    path = write_table(tmp_path / "ch" / "lee.csv", frame, metadata(command="make book", seed=3))
    back, meta = read_table(path)
    pd.testing.assert_frame_equal(back, frame)
    assert meta["command"] == "make book" and meta["seed"] == 3 and meta["rows"] == 2
    assert {"torch", "lielib", "python"} <= set(meta["versions"])
    assert meta_path(path).name == "lee.meta.json"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_missing_table_says_how_to_make_it(tmp_path):
    with pytest.raises(MissingResultsError, match="python -m lielib.book.sweep"):
        read_table(tmp_path / "nope.csv", how="python -m lielib.book.sweep chapters/x.py")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_provenance_lists_files_and_commands(tmp_path):
    frame = pd.DataFrame({"x": [1]})
    path = write_table(tmp_path / "t.csv", frame, metadata(command="python -m lielib.book.bench", seed=0))
    text = provenance_markdown([path, tmp_path / "absent.csv"], root=tmp_path)
    assert "`t.csv`" in text and "python -m lielib.book.bench" in text
    assert "`absent.csv`: **missing**" in text
    assert json.loads(meta_path(path).read_text())["seed"] == 0


def test_metadata_names_lielib_clis_as_modules(monkeypatch):
    import lielib.book.bench

    monkeypatch.setattr("sys.argv", [lielib.book.bench.__file__, "--images", "4"])
    assert metadata()["command"] == "python -m lielib.book.bench --images 4"
