"""Bad sweep input meets a clear error before anything runs; merge reads only whole tables.

Typed ``-p`` values (the worker's defaults say the type), an ``--out`` that is a file,
counts that make no sense; merge with a killed writer's temporary file, renamed columns,
stray copies, header-only files, rows of another model, unreadable or unmatched files.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import FAKE_CHAPTER, models_of, stand_in_checkpoints

from lielib.book import sweep
from lielib.book.results import ROOT, meta_path, metadata, write_table
from lielib.book.sweep.cli import main

WORKER = ROOT / "chapters" / "workers" / "measure_model.py"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path / "cache"))
    stand_in_checkpoints()


@pytest.fixture
def fake_chapter(tmp_path: Path) -> Path:
    path = tmp_path / "fake_chapter.py"
    path.write_text(FAKE_CHAPTER)
    return path


# --- -p values are typed like the worker's defaults -------------------------------------------

@pytest.mark.parametrize(
    ("key", "value", "default", "expected"),
    [
        ("metrics", "False", True, False),
        ("metrics", "false", True, False),
        ("metrics", "0", True, False),
        ("metrics", "TRUE", False, True),
        ("metrics", "yes", False, True),
        ("n_images", "8", 64, 8),
        ("n_images", " 8 ", 64, 8),
        ("sleep", "2", 0.0, 2.0),
        ("sleep", "0.25", 0.0, 0.25),
        ("actions", '["rotate", "scale"]', ["translate_x"], ["rotate", "scale"]),
        ("actions", "[]", ["translate_x"], []),
        ("imagenet", "/data/val", "", "/data/val"),
        ("device", "0", "cpu", "0"),
        ("anything", "[1, 2]", None, [1, 2]),
        ("anything", "text", None, "text"),
    ],
)
def test_parameter_values_take_the_default_type(key: str, value: str, default, expected) -> None:
    got = sweep.coerce_parameter(key, value, default)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "default", "match"),
    [
        ("metrics", "maybe", True, r"-p metrics 'maybe': metrics is a boolean .*one of true/1/yes/on/false"),
        ("metrics", "2", True, "metrics is a boolean"),
        ("n_images", "8.5", 64, r"n_images is an integer \(its default is 64\).*-p n_images 64"),
        ("n_images", "True", 64, "n_images is an integer"),
        ("n_images", "many", 64, "n_images is an integer"),
        ("sleep", "soon", 0.0, "sleep is a number"),
        ("sleep", "true", 0.0, "sleep is a number"),
        ("actions", "rotate", ["translate_x"], "actions is a JSON list"),
        ("actions", "[1, 2]", ["translate_x"], "items are each a string"),
        ("options", "[1]", {"a": 1}, "options is a JSON object"),
    ],
)
def test_parameter_values_that_do_not_fit_are_errors(key, value, default, match) -> None:
    with pytest.raises(sweep.SweepError, match=match):
        sweep.coerce_parameter(key, value, default)


def test_worker_parameters_are_typed_from_its_parameters_cell() -> None:
    """``-p metrics False`` reaches the real worker as ``False``, not the truthy "False"."""
    defaults = sweep.chapter_parameters(WORKER)
    assert defaults["metrics"] is True and isinstance(defaults["n_images"], int)
    _, extra, _ = sweep.shard_todo(WORKER, "zoo-init", params={
        "metrics": "False", "n_images": "2", "actions": '["rotate"]', "threads": "1"})
    assert extra == {"metrics": False, "n_images": 2, "actions": ["rotate"], "threads": 1}
    with pytest.raises(sweep.SweepError, match="n_images is an integer"):
        sweep.shard_todo(WORKER, "zoo-init", params={"n_images": "two"})


def test_bad_parameter_value_fails_before_any_kernel(fake_chapter: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    models = models_of("zoo-init", 2)
    with pytest.raises(SystemExit) as exit_info:
        main([str(fake_chapter), "--models", "zoo-init", "--only", *models, "--out",
              str(tmp_path / "out"), "-p", "sleep", "forever"])
    assert exit_info.value.code == 2
    assert "-p sleep 'forever': sleep is a number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "sweeps").exists()


def test_a_parameter_given_twice_is_an_error(fake_chapter: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([str(fake_chapter), "--models", "zoo-init", "--out", str(tmp_path / "o"),
              "-p", "sleep", "1", "-p", "sleep", "2"])
    assert "-p sleep is given twice" in capsys.readouterr().err


# --- --out and counts --------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["file", "inside-a-file"])
@pytest.mark.parametrize("executor", [[], ["--executor", "local", "--shards", "1"]],
                         ids=["here", "local"])
def test_out_that_is_a_file_is_rejected_before_running(
    fake_chapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str,
    executor: list[str],
) -> None:
    (tmp_path / "taken").write_text("not a folder\n")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "sub"
    with pytest.raises(SystemExit) as exit_info:
        main([str(fake_chapter), "--models", "zoo-init", "--only", models_of("zoo-init", 1)[0],
              "--out", str(out), "--no-progress", "--log-dir", str(tmp_path / "logs"), *executor])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "a file: pass a folder" in err
    assert (tmp_path / "taken").read_text() == "not a folder\n"
    assert not (tmp_path / "cache" / "sweeps").exists() and not (tmp_path / "logs").exists()
    with pytest.raises(sweep.SweepError, match="is a file|which is a file"):
        sweep.run_sweep(fake_chapter, "zoo-init", out=out, progress=False)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--executor", "local", "--shards", "0"], "--shards 0: must be positive"),
        (["--executor", "slurm", "--shards", "-2"], "--shards -2: must be positive"),
        (["--shards", "2"], "--shards 2 needs --executor"),
        (["--shard", "0/2", "--shards", "2", "--executor", "local"], "pass one of them"),
        (["--executor", "local", "--time", "0"], "--time 0: must be positive"),
        (["--executor", "local", "--mem-gb", "-1"], "--mem-gb -1.0: must be positive"),
        (["--executor", "slurm", "--shards", "2", "--max-timeouts", "-1"], "0 or more"),
        (["--shard", "2/2"], "--shard 2/2"),
    ],
    ids=["zero-shards", "negative-shards", "shards-without-executor", "shard-and-shards",
         "time", "memory", "timeouts", "shard-range"],
)
def test_bad_counts_are_usage_errors(fake_chapter: Path, tmp_path: Path, extra: list[str],
                                     match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(fake_chapter), "--models", "zoo-init", "--out", str(tmp_path / "out"), *extra])
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- merge reads whole per-model tables only ---------------------------------------------------

def _table(model: str, *, rows: int = 2, value: str = "value") -> pd.DataFrame:
    return pd.DataFrame({"model": model, "image": range(rows), value: [1.5 * i for i in range(rows)]})


def _write(out: Path, model: str, frame: pd.DataFrame | None = None) -> Path:
    path = sweep.result_path(out, model)
    write_table(path, _table(model) if frame is None else frame, metadata(command="sweep cmd", seed=0))
    return path


@pytest.fixture
def swept(tmp_path: Path) -> tuple[Path, list[str]]:
    """A sweep folder with two whole per-model tables."""
    models = models_of("zoo-init", 3)
    out = tmp_path / "zoo-init"
    for m in models[:2]:
        _write(out, m)
    return out, models


def test_merge_ignores_a_killed_writers_temporary_file(swept: tuple[Path, list[str]]) -> None:
    """The temporary of a write killed before ``os.replace``: not a model, not a row."""
    out, models = swept
    temp = out / f".{models[2]}.999999999.k2j4x.tmp.csv"  # atomic_path's name, a dead pid
    temp.write_text(f"model,image,value\n{models[2]},0,1.5\n{models[2]},1")  # cut mid-row
    hidden = out / f".{models[0]}.csv"
    shutil.copy(sweep.result_path(out, models[0]), hidden)  # a dot-file copy is no result either
    path, table = sweep.merge(out, set_name="zoo-init")
    assert table.groupby("model").size().to_dict() == {models[0]: 2, models[1]: 2}
    assert not table.isna().any().any()
    meta = json.loads(meta_path(path).read_text())
    assert meta["models"] == models[:2]
    assert not [f for f in meta["per_model_files"] if "/." in f or f.startswith(".")]
    assert models[2] in meta["missing"]


def _rename_column(out: Path, m: str) -> None:
    _write(out, m, _table(m, value="valeur"))


def _stray_copy(out: Path, m: str) -> None:
    src = sweep.result_path(out, models_of("zoo-init", 1)[0])
    shutil.copy(src, out / f"{src.stem} (copy).csv")
    shutil.copy(meta_path(src), out / f"{src.stem} (copy).meta.json")


def _header_only(out: Path, m: str) -> None:
    _write(out, m, _table(m, rows=0))


def _other_models_rows(out: Path, m: str) -> None:
    other = models_of("zoo-init", 1)[0]
    _write(out, m, _table(other))


def _two_models(out: Path, m: str) -> None:
    _write(out, m, pd.concat([_table(m), _table(models_of("zoo-init", 1)[0])]))


def _not_utf8(out: Path, m: str) -> None:
    data = b"model,image\n\xff\xfe\x00garbage\n"
    sweep.result_path(out, m).write_bytes(data)
    json_meta = {"csv_sha256": hashlib.sha256(data).hexdigest()}  # vouches for the bytes
    meta_path(sweep.result_path(out, m)).write_text(json.dumps(json_meta))


def _edited(out: Path, m: str) -> None:
    path = _write(out, m)
    path.write_text(path.read_text().replace("1.5", "2.5"))


def _no_metadata(out: Path, m: str) -> None:
    _table(m).to_csv(sweep.result_path(out, m), index=False)


def _not_in_set(out: Path, m: str) -> None:
    _write(out, "no-such-model")


def _no_model_column(out: Path, m: str) -> None:
    _write(out, m, _table(m).drop(columns="model"))


CORRUPTIONS = {
    "renamed-column": (_rename_column, (r"other columns than the rest \(missing \['value'\], "
                                        r"extra \['valeur'\]\).*--force --only {m}")),
    "stray-copy": (_stray_copy, (r"\(copy\)\.csv holds rows of '{m0}', whose table is {m0}\.csv: "
                                 "a stray copy")),
    "header-only": (_header_only, r"{m}\.csv has a header but no rows; delete {m}\.csv"),
    "other-model": (_other_models_rows, r"{m}\.csv holds rows of '{m0}', whose table is {m0}\.csv"),
    "two-models": (_two_models, r"{m}\.csv holds rows of 2 models"),
    "unreadable": (_not_utf8, r"{m}\.csv is not a UTF-8 CSV table \(UnicodeDecodeError"),
    "edited": (_edited, r"{m}\.csv: .*does not match its metadata"),
    "no-metadata": (_no_metadata, r"{m}\.csv has no metadata {m}\.meta\.json"),
    "not-in-set": (_not_in_set, r"no-such-model\.csv: model 'no-such-model' is not in set 'zoo-init'"),
    "no-model-column": (_no_model_column, r"{m}\.csv has no `model` column"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_merge_refuses_bad_per_model_files_naming_each(swept: tuple[Path, list[str]], case: str) -> None:
    out, models = swept
    corrupt, pattern = CORRUPTIONS[case]
    corrupt(out, models[2])
    with pytest.raises(sweep.SweepError, match=pattern.format(m=models[2], m0=models[0])) as err:
        sweep.merge(out, set_name="zoo-init")
    assert "not merged: 1 problem(s)" in str(err.value)
    assert not (out.parent / "zoo-init.csv").exists()  # nothing written


def test_merge_cli_names_the_bad_file(swept: tuple[Path, list[str]],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out, models = swept
    _header_only(out, models[2])
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(out), "--models", "zoo-init"])
    assert exit_info.value.code == 2
    assert f"{sweep.result_path(out, models[2])} has a header but no rows" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (lambda out: [str(out / "nope")], "does not exist; pass the sweep's --out folder"),
        (lambda out: [str(sweep.result_path(out, models_of("zoo-init", 1)[0]))], "is a file"),
        (lambda out: [str(out), "--output", str(out / "merged.csv")], "is inside"),
        (lambda out: [str(out), "--output", str(out.parent / "merged.txt")], "is a .csv file"),
        (lambda out: [str(out), "--models", "zoo-nit"], "unknown model set 'zoo-nit'"),
    ],
    ids=["missing-folder", "file", "output-inside", "output-not-csv", "unknown-set"],
)
def test_merge_bad_arguments(swept: tuple[Path, list[str]], args, match: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = swept
    with pytest.raises(SystemExit):
        main(["merge", *args(out)])
    assert match in capsys.readouterr().err


def test_merged_table_of_a_dotted_folder_goes_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "sweep.v2"
    m = models_of("zoo-init", 1)[0]
    _write(out, m)
    path, _ = sweep.merge(out)
    assert path == tmp_path / "sweep.v2.csv"


def test_a_table_without_matching_metadata_is_not_done(tmp_path: Path) -> None:
    """A writer killed between the metadata and the table: the model is measured again."""
    m = models_of("zoo-init", 1)[0]
    path = _write(tmp_path, m)
    assert sweep.is_complete(tmp_path, m)
    write_table(tmp_path / "other.csv", _table(m, rows=3), metadata(command="x"))
    shutil.copy(meta_path(tmp_path / "other.csv"), meta_path(path))  # the next run's metadata
    assert not sweep.is_complete(tmp_path, m)
    meta_path(path).unlink()
    assert not sweep.is_complete(tmp_path, m)
    assert not sweep.is_complete(tmp_path, "never-run")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--count", "0"], "--count 0: must be at least 1"),
        (["--repeats", "-1"], "--repeats -1: must be at least 1"),
        (["--n-images", "0"], "--n-images 0: must be at least 1"),
        (["--out", "figures.csv"], "written as one .json file"),
        (["--models", "zoo"], "no trained checkpoint .*zoo_train"),
        (["--models", "zo"], "unknown model set 'zo'"),
    ],
    ids=["count", "repeats", "images", "out", "no-checkpoints", "unknown-set"],
)
def test_overhead_measurement_rejects_bad_arguments(
    args: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lielib.book.sweep.overhead import main as overhead_main

    with pytest.raises(SystemExit) as exit_info:
        overhead_main([*args, *([] if "--out" in args else ["--out", str(tmp_path / "o.json")])])
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "o.json").exists()


# --- folders named by parameters, actions: checked before any kernel --------------------------

@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record the parameters each kernel would get, without starting one."""
    calls: list[dict] = []
    monkeypatch.setattr("lielib.book.sweep.core._kernel",
                        lambda chapter, nb, params, progress: calls.append(params))
    return calls


def test_a_relative_data_root_is_taken_from_where_the_sweep_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_kernel: list[dict]) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    _, extra, _ = sweep.shard_todo(WORKER, "zoo-init", params={"data_root": "data"})
    assert extra["data_root"] == str(tmp_path / "data")
    model = models_of("zoo-init", 1)[0]
    sweep.run_sweep(WORKER, "zoo-init", only=[model], out="out", params={"data_root": "data"},
                    progress=False)
    (params,) = no_kernel
    assert params["data_root"] == str(tmp_path / "data") and params["out"] == str(tmp_path / "out")


@pytest.mark.parametrize("key", ["data_root", "imagenet"])
def test_a_missing_folder_parameter_fails_before_any_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        no_kernel: list[dict], key: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(WORKER), "--models", "zoo-init", "--out", "out", "-p", key, "nowhere"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"-p {key} nowhere: folder {tmp_path / 'nowhere'} does not exist" in err
    assert "started in" in err and not no_kernel and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        ('["rotate", "rotat"]', r"-p actions: unknown action 'rotat'; available: .*rotate"),
        ('["rotate", "scale", "rotate"]', r"names rotate more than once: each action is one column"),
        ("[]", r"pass a non-empty list of action names"),
    ],
    ids=["unknown", "twice", "empty"],
)
def test_bad_actions_fail_before_any_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            no_kernel: list[dict], actions: str, match: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(WORKER), "--models", "zoo-init", "--out", str(tmp_path / "out"),
              "-p", "actions", actions])
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not no_kernel and not (tmp_path / "out").exists()


def test_measure_models_refuses_repeated_actions_before_the_first_model(tmp_path: Path) -> None:
    with pytest.raises(sweep.SweepError, match="names rotate more than once"):
        sweep.measure_models(["resnet-small"], set_name="zoo-init", out=tmp_path / "out",
                             actions=["rotate", "rotate"])
    assert not (tmp_path / "out").exists()  # no failure record: nothing started


def test_the_local_executor_gets_absolute_folder_parameters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards run elsewhere (other processes, Slurm): they get the folders made absolute."""
    from lielib.book.sweep import executors

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    seen: dict = {}

    def submit_shards(executor, chapter, set_name, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(executors, "submit_shards", submit_shards)
    with pytest.raises(SystemExit):
        main([str(WORKER), "--models", "zoo-init", "--out", "out", "-p", "data_root", "data",
              "--executor", "local", "--shards", "1", "--log-dir", str(tmp_path / "logs")])
    assert seen["params"] == {"data_root": str(tmp_path / "data")}


def test_merge_output_in_a_file_is_refused_before_reading(swept: tuple[Path, list[str]],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = swept
    (out.parent / "taken").write_text("x")
    with pytest.raises(SystemExit):
        main(["merge", str(out), "--output", str(out.parent / "taken" / "m.csv")])
    assert "which is a file" in capsys.readouterr().err


def test_a_sweep_clears_what_killed_writers_left(tmp_path: Path, no_kernel: list[dict]) -> None:
    """A writer killed after its table was in place leaves its last metadata temporary; the
    model counts as done, so the next sweep start removes it."""
    import subprocess
    import sys

    model = models_of("zoo-init", 1)[0]
    out = tmp_path / "out"
    _write(out, model)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = out / f".{model}.meta.{dead.pid}.x1y2.tmp.json"
    left.write_text("{}")
    status = sweep.run_sweep(WORKER, "zoo-init", only=[model], out=out, progress=False)
    assert status["skipped"] == [model] and not no_kernel
    assert not left.exists()
