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


# --- a table is read only with metadata that carries its hash ----------------------------

def _edited_without(tmp_path, what):
    path = write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1, 2]}), {"seed": 0})
    path.write_text(path.read_text().replace("2", "20"))  # edited by hand
    if what == "metadata":
        meta_path(path).unlink()
    else:
        meta = json.loads(meta_path(path).read_text())
        del meta["csv_sha256"]  # a file from before the hash was recorded
        meta_path(path).write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("what", ["metadata", "hash"])
def test_an_edited_table_without_metadata_or_hash_is_not_read(tmp_path, what):
    from lielib.book.results import ResultsMismatchError

    path = _edited_without(tmp_path, what)
    expected = "has no metadata t.meta.json" if what == "metadata" else "t.meta.json has no csv_sha256"
    with pytest.raises(ResultsMismatchError, match=expected) as err:
        read_or_compute(path, how="python -m make_t")
    message = str(err.value)
    assert "python -m make_t" in message and "recompute=True" in message
    assert f"git restore {path} {meta_path(path)}" in message
    frame, meta = read_or_compute(  # recomputing is the way out
        path, lambda: write_table(path, pd.DataFrame({"a": [3]}), {"seed": 1}), recompute=True)
    assert frame.a.tolist() == [3] and meta["seed"] == 1


def test_a_binary_table_is_an_error_naming_the_file(tmp_path):
    from lielib.book.results import ResultsMismatchError, UnreadableResultsError, read_json

    path = write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1]}), {})
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ResultsMismatchError, match=f"{path} does not match"):
        read_table(path)
    import hashlib

    meta = json.loads(meta_path(path).read_text())  # metadata that vouches for the bytes
    meta["csv_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path(path).write_text(json.dumps(meta))
    with pytest.raises(UnreadableResultsError, match=f"{path} is not a UTF-8 CSV table "
                       r"\(UnicodeDecodeError"):
        read_table(path)
    (tmp_path / "x.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(UnreadableResultsError, match=f"{tmp_path / 'x.json'} is not a JSON file"):
        read_json(tmp_path / "x.json")


# --- a killed write leaves the old pair or the new one ------------------------------------

class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs in the writer (cleanup aside)."""


@pytest.mark.parametrize(("renames", "survivor"), [(0, "old"), (1, "old"), (2, "new"), (3, "new")],
                         ids=["before-any-rename", "after-metadata", "after-table", "after-all"])
def test_a_write_killed_after_each_step_leaves_a_readable_pair(tmp_path, monkeypatch, renames,
                                                               survivor):
    from lielib.book import results

    path = write_table(tmp_path / "t.csv", pd.DataFrame({"v": ["old"] * 3}), {"v": "old"})
    real, done = results._rename, []

    def rename_then_die(src, dst):
        if len(done) == renames:
            raise _Killed
        real(src, dst)
        done.append(dst)
        if len(done) == renames:
            raise _Killed

    monkeypatch.setattr(results, "_rename", rename_then_die)
    with pytest.raises(_Killed):
        write_table(path, pd.DataFrame({"v": ["new"] * 2}), {"v": "new"})
    monkeypatch.setattr(results, "_rename", real)
    frame, meta = read_table(path)
    assert frame.v.tolist() == [survivor] * (3 if survivor == "old" else 2)
    assert meta["v"] == survivor and "replaces" not in meta
    write_table(path, pd.DataFrame({"v": ["next"]}), {"v": "next"})  # the next write recovers
    frame, meta = read_table(path)
    assert frame.v.tolist() == ["next"] and meta["v"] == "next"
    assert "replaces" not in json.loads(meta_path(path).read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.meta.json"]


def test_a_first_write_killed_after_its_metadata_leaves_no_table(tmp_path, monkeypatch):
    from lielib.book import results

    real = results._rename

    def die_after_one(src, dst):
        real(src, dst)
        raise _Killed

    monkeypatch.setattr(results, "_rename", die_after_one)
    with pytest.raises(_Killed):
        write_table(tmp_path / "t.csv", pd.DataFrame({"v": [1]}), {})
    monkeypatch.setattr(results, "_rename", real)
    with pytest.raises(MissingResultsError):
        read_table(tmp_path / "t.csv")
    write_table(tmp_path / "t.csv", pd.DataFrame({"v": [2]}), {})
    assert read_table(tmp_path / "t.csv")[0].v.tolist() == [2]


_KILLER = """
import os, random, signal, sys, time
import pandas as pd
from lielib.book.results import read_table, write_table

path, rounds, rng = sys.argv[1], int(sys.argv[2]), random.Random(int(sys.argv[3]))
frame = lambda i: pd.DataFrame({"i": [i] * 40, "value": range(40)})
write_table(path, frame(0), {"i": 0})
for r in range(rounds):
    pid = os.fork()
    if pid == 0:  # a writer that rewrites the pair until it is killed
        k = 0
        while True:
            k += 1
            write_table(path, frame(r * 100000 + k), {"i": r * 100000 + k})
    time.sleep(rng.uniform(0.0, 0.02))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    table, meta = read_table(path)  # raises if the kill left no readable pair
    assert (table["i"] == meta["i"]).all() and len(table) == 40, (r, meta["i"])
print("survived", rounds)
"""


@pytest.mark.slow
def test_writers_killed_at_random_moments_leave_a_readable_pair(tmp_path):
    """SIGKILL at random moments of rewriting one table: every time, a whole pair is read."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _KILLER, str(tmp_path / "t.csv"), "150", "0"],
                         check=False, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "survived 150" in res.stdout


# --- an index and metadata values survive the round trip ---------------------------------

def test_a_named_index_is_stored_as_columns(tmp_path):
    by_image = pd.DataFrame({"rotate": [0.1, 0.2]}, index=pd.Index([7, 9], name="image"))
    back, meta = read_table(write_table(tmp_path / "a.csv", by_image, {}))
    pd.testing.assert_frame_equal(back, by_image.reset_index())
    assert meta["columns"] == ["image", "rotate"]
    two = by_image.assign(action="rotate").set_index("action", append=True)
    back, _ = read_table(write_table(tmp_path / "b.csv", two, {}))
    assert list(back.columns) == ["image", "action", "rotate"]
    labels = pd.DataFrame({"x": [1, 2]}, index=["cat", "dog"])  # labels, unnamed
    back, _ = read_table(write_table(tmp_path / "c.csv", labels, {}))
    assert back["index"].tolist() == ["cat", "dog"]
    filtered = pd.DataFrame({"x": [1, 2, 3]})[lambda d: d.x > 1]  # row numbers 1, 2: not stored
    back, _ = read_table(write_table(tmp_path / "d.csv", filtered, {}))
    assert list(back.columns) == ["x"] and back.x.tolist() == [2, 3]
    clash = pd.DataFrame({"image": [1]}, index=pd.Index([0], name="image"))
    with pytest.raises(ValueError, match="rename the index"):
        write_table(tmp_path / "e.csv", clash, {})


def test_metadata_arrays_sets_and_scalars_are_json_values(tmp_path):
    import datetime
    from pathlib import Path

    import numpy as np
    import torch

    meta = {"ids": np.array([3, 1, 2]), "grid": np.array([[0.5, np.nan]]), "tags": {"b", "a", "c"},
            "size": (3, 224, 224), "mean": np.float32(0.25), "n": np.int64(4), "ok": np.bool_(True),
            "t": torch.tensor([1.5, 2.0]), "where": Path("/x/y"), "keys": {1: "one", "2": "two"},
            "day": datetime.date(2026, 1, 2), "series": pd.Series([1, 2], index=["a", "b"])}
    _, back = read_table(write_table(tmp_path / "t.csv", pd.DataFrame({"a": [1]}), meta))
    assert back["ids"] == [3, 1, 2] and back["grid"] == [[0.5, None]]
    assert back["tags"] == ["a", "b", "c"] and back["size"] == [3, 224, 224]
    assert back["mean"] == 0.25 and back["n"] == 4 and back["ok"] is True
    assert back["t"] == [1.5, 2.0] and back["where"] == "/x/y"
    assert back["keys"] == {"1": "one", "2": "two"} and back["day"] == "2026-01-02"
    assert back["series"] == [1, 2]


# --- output paths are checked before any work ------------------------------------------------

def test_check_output_accepts_a_creatable_path_and_creates_nothing(tmp_path, monkeypatch):
    from lielib.book.results import check_output

    monkeypatch.chdir(tmp_path)
    assert check_output("a/b", "--out") == tmp_path / "a" / "b"
    assert check_output("a/b.json", "--out", folder=False, suffix=".json") == tmp_path / "a" / "b.json"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("setup", "kwargs", "match"),
    [
        (lambda t: (t / "f").write_text("x") and t / "f", {}, "is a file: pass a folder"),
        (lambda t: (t / "f").write_text("x") and t / "f" / "sub", {}, r"is inside .*f, which is a file"),
        (lambda t: t, {"folder": False, "suffix": ".json"}, "is a folder: pass a file name such as"),
        (lambda t: t / "out.csv", {"folder": False, "suffix": ".json"}, "ending in .json"),
        (lambda t: (t / "f").write_text("x") and t / "f" / "o.json", {"folder": False},
         "which is a file"),
    ],
    ids=["folder-is-file", "folder-inside-file", "file-is-folder", "suffix", "file-inside-file"],
)
def test_check_output_refuses_what_cannot_be_written(tmp_path, setup, kwargs, match):
    from lielib.book.results import OutputPathError, check_output

    with pytest.raises(OutputPathError, match=match):
        check_output(setup(tmp_path), "--out", **kwargs)


def test_check_output_refuses_a_folder_without_write_permission(tmp_path, monkeypatch):
    from lielib.book.results import OutputPathError, check_output

    monkeypatch.setattr(os, "access", lambda p, mode: os.fspath(p) != os.fspath(tmp_path))
    with pytest.raises(OutputPathError, match=f"{tmp_path} is not writable"):
        check_output(tmp_path / "new" / "deeper", "--out")


def test_a_folders_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from lielib.book.results import remove_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".m.in1k.meta.{dead.pid}.k2j_4x.tmp.json",  # a kill after the table
             tmp_path / f".m.in1k.{dead.pid}.abc.tmp.csv",
             tmp_path / f".final.pt.{dead.pid}.q1w2.tmp"]  # an older checkpoint temporary
    kept = [tmp_path / f".m.in1k.meta.{os.getpid()}.live.tmp.json", tmp_path / "m.in1k.csv",
            tmp_path / ".hidden.2.tmp"]
    for f in stale + kept:
        f.write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
