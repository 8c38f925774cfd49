import json
import os

import pandas as pd
import pytest

from lielib.book.paths import ROOT, NotAvailableError, cache_dir, repo_root, safe_name
from lielib.book.results import (
    MissingResultsError,
    atomic_write_text,
    meta_path,
    metadata,
    provenance_markdown,
    read_or_compute,
    read_table,
    record_skip,
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


def test_paths(monkeypatch, tmp_path):
    assert repo_root(ROOT / "chapters") == ROOT == repo_root(ROOT)
    monkeypatch.delenv("LIELIB_CACHE", raising=False)
    assert cache_dir("zoo") == ROOT / "cache" / "zoo"
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path))
    assert cache_dir("zoo", "a.pt") == tmp_path / "zoo" / "a.pt" and cache_dir() == tmp_path
    assert safe_name("timm/vit_small.augreg") == "timm__vit_small.augreg"
    assert safe_name("resnet18") == "resnet18"
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError):
            safe_name(bad)


def test_missing_results_are_not_available():
    assert issubclass(MissingResultsError, NotAvailableError)
    assert issubclass(MissingResultsError, FileNotFoundError)


def test_read_or_compute_computes_only_when_asked(tmp_path):
    path = tmp_path / "t.csv"
    calls = []

    def compute():
        calls.append(1)
        write_table(path, pd.DataFrame({"x": [len(calls)]}), metadata(command="c", seed=0, p=1))

    with pytest.raises(MissingResultsError, match="python -m make_it"):
        read_or_compute(path, compute, how="python -m make_it")
    assert not calls and not path.exists()
    frame, meta = read_or_compute(path, compute, recompute=True)
    assert calls == [1] and frame.x.tolist() == [1] and meta["p"] == 1
    frame, _ = read_or_compute(path, compute)  # stored: read, not recomputed
    assert calls == [1] and frame.x.tolist() == [1]
    with pytest.raises(MissingResultsError, match="made with p=1"):
        read_or_compute(path, compute, stale=lambda m: f"made with p={m['p']}" if m["p"] != 2
                        else None)
    with pytest.raises(ValueError, match="nothing computes"):
        read_or_compute(path, recompute=True)


def test_record_skip_prints_records_and_reraises_other_errors(capsys):
    skipped = []
    line = record_skip(skipped, "zoo:vit_p4", MissingResultsError("no file\nsecond line"))
    assert skipped == [line] == ["zoo:vit_p4: MissingResultsError: no file"]
    assert "skipped zoo:vit_p4" in capsys.readouterr().err
    with pytest.raises(KeyError):
        record_skip(skipped, "x", KeyError("a bug, not a missing file"))
    assert len(skipped) == 1
