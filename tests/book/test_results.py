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
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("zoo") == tmp_path / "xdg" / "lielib" / "zoo"
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


# --- the pair as one unit, strict metadata, killed writers ----------------------------------

_WRITER = """
import sys
import pandas as pd
from lielib.book.results import write_table
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    frame = pd.DataFrame({"writer": [who] * 50, "i": [i] * 50, "value": range(50)})
    write_table(path, frame, {"writer": who, "i": i})
"""


def test_two_concurrent_writers_leave_a_consistent_pair(tmp_path):
    """Two processes rewrite one table while this one reads it: every pair read matches."""
    import subprocess
    import sys
    import time

    path = tmp_path / "t.csv"
    write_table(path, pd.DataFrame({"writer": ["none"], "i": [0], "value": [0]}),
                {"writer": "none", "i": 0})
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), who, "60"])
             for who in ("a", "b")]
    reads = 0
    while any(p.poll() is None for p in procs):
        frame, meta = read_table(path)
        assert (frame["writer"] == meta["writer"]).all() and (frame["i"] == meta["i"]).all()
        reads += 1
        time.sleep(0.002)
    assert all(p.wait() == 0 for p in procs)
    frame, meta = read_table(path)
    assert (meta["writer"], meta["i"]) == (frame["writer"][0], frame["i"][0])
    assert meta["i"] == 59 and reads > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.meta.json"]


def test_a_table_that_does_not_match_its_metadata_is_refused(tmp_path):
    from lielib.book.results import ResultsMismatchError

    path = write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1, 2]}), {"seed": 0})
    pd.DataFrame({"a": [1, 3]}).to_csv(path, index=False)  # replaced on its own
    with pytest.raises(ResultsMismatchError, match="t.meta.json.*different runs.*make t"):
        read_table(path, how="make t")


def test_metadata_is_strict_json(tmp_path):
    import math

    import numpy as np

    meta = {"accuracy": math.nan, "hi": math.inf, "lo": np.float32(-np.inf), "n": np.int64(3),
            "nested": [{"x": float("nan")}], "ok": 0.5}
    path = write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1]}), meta)
    text = meta_path(path).read_text()
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the metadata"))
    assert back["accuracy"] is None and back["hi"] is None and back["lo"] is None
    assert back["n"] == 3 and back["nested"] == [{"x": None}] and back["ok"] == 0.5


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".t.{dead.pid}.abc123.tmp.csv"
    stale.write_text("half a table")
    other = tmp_path / f".t.{os.getpid()}.live.tmp.csv"  # a live writer's: kept
    other.write_text("in progress")
    write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1]}), {})
    assert not stale.exists() and other.exists()
