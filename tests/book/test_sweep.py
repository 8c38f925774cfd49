"""The sweep command: shards, one kernel per shard, resume after a kill, failures, merge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lielib.book import sweep
from lielib.book.modelsets import METRIC_COLUMNS, SCHEMA, fit_log_linear, per_model, set_models
from lielib.book.paths import cache_dir
from lielib.book.results import ROOT, metadata, read_table, write_table

REAL_ZOO = cache_dir("zoo").resolve()
"""The zoo's checkpoint folder before the tests point LIELIB_CACHE elsewhere."""

FAKE_CHAPTER = '''\
# %% [markdown]
# A tiny worker for sweep tests: two rows per model; it can fail, die or kill its shard.

# %% tags=["parameters"]
models = ["a"]
source = "zoo"
out = ""
command = ""
fail_on = ""
die_on = ""
kill_shard_on = ""
sleep = 0.0

# %%
import os
import shutil
import signal
import time

import pandas as pd

from lielib.book.results import metadata, write_table
from lielib.book.sweep import run_models

KERNEL_START = time.time()


def work(model, target):
    if model == fail_on:
        raise RuntimeError(f"deliberate failure for {model}")
    if model == die_on:
        os._exit(3)
    if model == kill_shard_on:
        os.kill(os.getppid(), signal.SIGKILL)
        os._exit(3)
    time.sleep(sleep)
    write_table(target, pd.DataFrame({"model": [model, model], "image": [0, 1], "value": [1.0, 2.0],
                                      "pid": os.getpid(), "kernel_start": KERNEL_START,
                                      "end": time.time()}),
                metadata(command=command, seed=0))


status = run_models(models, out, work, command=command)
'''


def models_of(set_name: str, count: int) -> list[str]:
    """The first ``count`` models of a set (names come from the set, not from this file)."""
    return set_models(set_name)[:count]


@pytest.fixture
def fake_chapter(tmp_path: Path) -> Path:
    path = tmp_path / "fake_chapter.py"
    path.write_text(FAKE_CHAPTER)
    return path


def stand_in_checkpoints() -> None:
    """Empty step-0 checkpoint files for the zoo in the (temporary) cache: ``zoo-init``'s
    preflight needs them, and the fake worker never loads a model."""
    from lielib.book import zoo

    for name in zoo.zoo_names():
        path = zoo.checkpoint_path(name, step=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path / "cache"))
    stand_in_checkpoints()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 19, 25])
def test_shards_cover_every_model_exactly_once(n: int) -> None:
    models = set_models("zoo")
    parts = [sweep.shard(models, i, n) for i in range(n)]
    flat = [m for p in parts for m in p]
    assert sorted(flat) == sorted(models)
    assert len(flat) == len(set(flat)) == len(models)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [sweep.shard(list(models), i, n) for i in range(n)]  # deterministic


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_is_a_clear_error(text: str) -> None:
    with pytest.raises(sweep.SweepError, match="shard"):
        sweep.parse_shard(text)


def test_parse_shard() -> None:
    assert sweep.parse_shard("2/5") == (2, 5)


def test_chapter_parameters(fake_chapter: Path) -> None:
    params = sweep.chapter_parameters(fake_chapter)
    assert params == {"models": ["a"], "source": "zoo", "out": "", "command": "", "fail_on": "",
                      "die_on": "", "kill_shard_on": "", "sleep": 0.0}


def test_worker_declares_models_and_out() -> None:
    params = sweep.chapter_parameters(ROOT / "chapters" / "workers" / "measure_model.py")
    assert isinstance(params["models"], list) and "out" in params
    assert not {"model"} & set(params), "the worker takes a shard's list of models"


FIRST = set_models("zoo")[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"set_name": "nope"}, "unknown model set 'nope'"),
        ({"set_name": "zoo", "only": [FIRST + "9"]}, f"unknown model '{FIRST}9'.*{FIRST}"),
        ({"set_name": "zoo", "params": {"colour": "red"}}, "no parameter 'colour'"),
        ({"set_name": "zoo", "params": {"models": "x"}}, "sets `models` itself"),
        ({"set_name": "paper"}, "ImageNet validation folder"),
    ],
    ids=["set", "model", "param", "reserved", "imagenet"],
)
def test_clear_errors(fake_chapter: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(sweep.SweepError, match=match):
        sweep.run_sweep(fake_chapter, out=tmp_path / "out", progress=False, **kwargs)


def test_paper_set_with_a_missing_imagenet_folder(tmp_path: Path) -> None:
    with pytest.raises(sweep.SweepError, match="-p imagenet /no/such/imagenet: folder /no/such/imagenet does not exist"):
        sweep.run_sweep(ROOT / "chapters" / "workers" / "measure_model.py", "paper",
                        out=tmp_path / "out", params={"imagenet": "/no/such/imagenet"},
                        progress=False)


def test_missing_checkpoints_say_how_to_train(fake_chapter: Path, tmp_path: Path) -> None:
    with pytest.raises(sweep.SweepError, match=rf"python -m lielib\.book\.\w+ .*--only {FIRST}"):
        sweep.run_sweep(fake_chapter, "zoo", only=[FIRST], out=tmp_path / "out", progress=False)


@pytest.mark.parametrize("source", ["# %%\nx = 1\n", '# %% tags=["parameters"]\nmodel = "a"\nout = ""\n'],
                         ids=["no-parameters-cell", "one-model-parameter"])
def test_chapter_that_is_no_worker(tmp_path: Path, source: str) -> None:
    path = tmp_path / "plain.py"
    path.write_text(source)
    with pytest.raises(sweep.SweepError, match="tagged `parameters`|must declare `models`"):
        sweep.run_sweep(path, "zoo-init", out=tmp_path / "out", progress=False)


def _pids(out: Path, models: list[str]) -> list[int]:
    return [int(pd.read_csv(sweep.result_path(out, m))["pid"].iloc[0]) for m in models]


@pytest.mark.slow
def test_one_kernel_per_shard_or_per_model(fake_chapter: Path, tmp_path: Path) -> None:
    models = models_of("zoo-init", 3)
    status = sweep.run_sweep(fake_chapter, "zoo-init", only=models, out=tmp_path / "shard",
                             progress=False)
    assert status == {"done": models, "skipped": [], "failed": []}
    assert len(set(_pids(tmp_path / "shard", models))) == 1
    notebooks = sorted(p.name for p in (tmp_path / "cache" / "sweeps" / "fake_chapter-shard").iterdir())
    assert notebooks == ["shard-0-of-1.ipynb"]
    status = sweep.run_sweep(fake_chapter, "zoo-init", only=models, out=tmp_path / "each",
                             progress=False, kernel_per_model=True)
    assert status["done"] == models
    assert len(set(_pids(tmp_path / "each", models))) == 3
    again = sweep.run_sweep(fake_chapter, "zoo-init", only=models, out=tmp_path / "shard",
                            progress=False)
    assert again == {"done": [], "skipped": models, "failed": []}


def _sweep_cmd(chapter: Path, out: Path, models: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "lielib.book.sweep", str(chapter), "--models", "zoo-init",
            "--only", *models, "--out", str(out), "--no-progress", *extra]


@pytest.mark.slow
def test_killed_sweep_resumes_with_nothing_lost_or_duplicated(fake_chapter: Path, tmp_path: Path) -> None:
    """Kill the sweep while the second model runs; the rerun does only what is missing."""
    models = models_of("zoo-init", 3)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_sweep_cmd(fake_chapter, out, models, "-p", "sleep", "3"), cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.csv")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    first = sorted(out.glob("*.csv"))
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its kernel
    proc.wait()
    assert len(first) == 1, "the sweep should have been killed after its first model"
    before = first[0].stat().st_mtime_ns
    started = json.loads(sweep.failure_path(out, models[1]).read_text())
    assert started["stage"] == "started"  # the model in progress is on record

    res = subprocess.run(_sweep_cmd(fake_chapter, out, models), cwd=ROOT, env=env,
                         capture_output=True, check=False, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "done 2, already there 1, failed 0" in res.stdout
    assert first[0].stat().st_mtime_ns == before  # the finished model was not rerun
    assert sorted(p.stem for p in out.glob("*.csv")) == sorted(models)
    assert not list(out.glob(".*.tmp*")) and not list((out / "failures").glob("*.json"))
    path, table = sweep.merge(out, set_name="zoo-init")
    assert table.groupby("model").size().to_dict() == {m: 2 for m in models}
    assert not table.duplicated(["model", "image"]).any()
    meta = json.loads(path.with_name("out.meta.json").read_text())
    assert meta["produced_by"] == "lielib.book.sweep"
    assert meta["models"] == models and meta["failures"] == []
    assert all(c.startswith("python -m lielib.book.sweep") for c in meta["sweep_commands"])


@pytest.mark.slow
def test_failing_model_is_recorded_and_the_shard_goes_on(fake_chapter: Path, tmp_path: Path) -> None:
    models = models_of("zoo-init", 3)
    out = tmp_path / "out"
    status = sweep.run_sweep(fake_chapter, "zoo-init", only=models, out=out,
                             params={"fail_on": models[0]}, progress=False)
    assert status == {"done": models[1:], "skipped": [], "failed": [models[0]]}
    failure = json.loads(sweep.failure_path(out, models[0]).read_text())
    assert "deliberate failure" in failure["error"] and "Traceback" in failure["traceback"]
    assert failure["stage"] == "failed"
    assert len(set(_pids(out, models[1:]))) == 1  # the same kernel went on
    _, table = sweep.merge(out, set_name="zoo-init")
    assert set(table["model"]) == set(models[1:])
    status = sweep.run_sweep(fake_chapter, "zoo-init", only=models, out=out, progress=False)
    assert status == {"done": [models[0]], "skipped": models[1:], "failed": []}
    assert not sweep.failure_path(out, models[0]).exists()


@pytest.mark.slow
def test_model_that_kills_the_kernel_costs_only_itself(fake_chapter: Path, tmp_path: Path) -> None:
    models = models_of("zoo-init", 3)
    out = tmp_path / "out"
    status = sweep.run_sweep(fake_chapter, "zoo-init", only=models, out=out,
                             params={"die_on": models[1]}, progress=False)
    assert status == {"done": [models[0], models[2]], "skipped": [], "failed": [models[1]]}
    failure = json.loads(sweep.failure_path(out, models[1]).read_text())
    assert failure["stage"] == "kernel died" and "did not finish" in failure["error"]
    assert failure["notebook"].endswith("shard-0-of-1.ipynb")
    pids = _pids(out, [models[0], models[2]])
    assert pids[0] != pids[1]  # the rest of the shard went on in a new kernel
    assert (tmp_path / "cache" / "sweeps" / "fake_chapter-out" / "shard-0-of-1.retry1.ipynb").is_file()


@pytest.mark.slow
def test_worker_that_fails_before_any_model(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text('# %% tags=["parameters"]\nmodels = []\nout = ""\n\n# %%\nraise ValueError("no")\n')
    models = models_of("zoo-init", 2)
    status = sweep.run_sweep(path, "zoo-init", only=models, out=tmp_path / "out", progress=False)
    assert status["failed"] == models
    failure = json.loads(sweep.failure_path(tmp_path / "out", models[1]).read_text())
    assert failure["stage"] == "worker" and "ValueError" in failure["error"]


def test_merge_of_nothing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(sweep.SweepError, match="nothing to merge"):
        sweep.merge(tmp_path)


def test_merge_lists_missing_models(tmp_path: Path) -> None:
    first = set_models("zoo")[0]
    out = tmp_path / "zoo"
    write_table(sweep.result_path(out, first), pd.DataFrame({"model": [first], "image": [0]}),
                metadata(command="test"))
    _, _ = sweep.merge(out, set_name="zoo")
    meta = json.loads((tmp_path / "zoo.meta.json").read_text())
    assert meta["models"] == [first]
    assert set(meta["missing"]) == set(set_models("zoo")) - {first}


@pytest.mark.parametrize("set_name", ["zoo", "zoo-init", "lite"])
def test_committed_results_match_schema(set_name: str) -> None:
    """The committed sweep results: every model once, the schema, made by the sweep.

    A set whose merged table is not committed (the zoo's tables are regenerated after the
    zoo is retrained) is skipped.
    """
    path = ROOT / "results" / "architectures" / f"{set_name}.csv"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not committed")
    table, meta = read_table(path, how=f"python -m lielib.book.sweep merge results/architectures/{set_name}")
    assert list(table.columns[: len(SCHEMA)]) == list(SCHEMA)
    lee_cols = [c for c in table if c.startswith("lee_")]
    assert {"lee_translate_x", "lee_translate_y", "lee_rotate", "lee_scale", "lee_saturate"} <= set(lee_cols)
    assert set(METRIC_COLUMNS) <= set(table.columns)
    assert sorted(table["model"].unique()) == sorted(set_models(set_name))
    assert not table.duplicated(["model", "image"]).any()
    assert (table.groupby("model").size() == table.groupby("model").size().iloc[0]).all()
    assert (table[lee_cols] >= 0).all().all() and table[lee_cols].notna().all().all()
    assert table["params"].gt(0).all()
    if set_name == "zoo-init":
        assert table["accuracy"].isna().all()
    else:
        assert table["accuracy"].between(0, 1).all()
    assert meta["produced_by"] == "lielib.book.sweep"
    assert meta["command"].startswith("python -m lielib.book.sweep merge")
    assert meta["sweep_commands"]
    assert all(c.startswith("python -m lielib.book.sweep chapters/workers/measure_model.py "
                            f"--models {set_name}") for c in meta["sweep_commands"])
    assert meta["missing"] == [] and meta["failures"] == []
    per_model = sorted((ROOT / "results" / "architectures" / set_name).glob("*.csv"))
    assert len(per_model) == len(set_models(set_name))


@pytest.mark.slow
def test_measure_model_chapter_runs_through_the_sweep(tmp_path: Path) -> None:
    """The real worker: two models of the zoo at initialisation in one kernel.

    Needs the zoo's step-0 checkpoints (``python -m lielib.book.zoo_train``) in the cache.
    """
    from lielib.book import zoo

    models = [m for m in set_models("zoo-init") if (REAL_ZOO / m / "step0000.pt").is_file()][:2]
    if len(models) < 2:
        pytest.skip(f"fewer than two zoo models have step-0 checkpoints in {REAL_ZOO}")
    shutil.rmtree(zoo.cache_dir())  # the stand-ins: this test loads the real checkpoints
    zoo.cache_dir().symlink_to(REAL_ZOO, target_is_directory=True)
    out = tmp_path / "zoo-init"
    status = sweep.run_sweep(ROOT / "chapters" / "workers" / "measure_model.py", "zoo-init",
                             only=models, out=out, params={"n_images": "2"}, progress=False)
    assert status["done"] == models, status
    for model in models:
        table, meta = read_table(sweep.result_path(out, model))
        assert list(table.columns[: len(SCHEMA)]) == list(SCHEMA)
        assert len(table) == 2 and set(METRIC_COLUMNS) <= set(table.columns)
        assert (table["model"] == model).all()
        assert meta["command"].startswith("python -m lielib.book.sweep")
        assert meta["set"] == "zoo-init" and meta["model"] == model
        assert 0 < meta["measure_seconds"] <= meta["seconds"]
        assert 0 < meta["load_seconds"] <= meta["seconds"]
    notebooks = list((tmp_path / "cache" / "sweeps" / "measure_model-zoo-init").glob("*.ipynb"))
    assert [p.name for p in notebooks] == ["shard-0-of-1.ipynb"]
    cells = json.loads(notebooks[0].read_text())["cells"]
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]


def test_fit_log_linear_known_answer() -> None:
    x = [0.5, 0.6, 0.7, 0.8, 0.9]
    y = [10 ** (1 - 2 * v) for v in x]
    fit = fit_log_linear(x, y)
    assert fit["slope"] == pytest.approx(-2) and fit["intercept"] == pytest.approx(1)
    assert fit["r2"] == pytest.approx(1) and fit["n"] == 5
    noisy = fit_log_linear(x, [v * f for v, f in zip(y, [1, 3, 0.5, 2, 0.7], strict=True)])
    assert 0 < noisy["r2"] < 1
    with pytest.raises(ValueError, match="at least 3"):
        fit_log_linear([0.5, 0.6], [1.0, 2.0])


def test_per_model_averages_images() -> None:
    table = pd.DataFrame({
        "model": ["a", "a", "b", "b"], "set": "zoo", "arch": "x", "family": "cnn",
        "params": 10, "accuracy": [0.5, 0.5, 0.7, 0.7], "accuracy_kind": "t", "image": [0, 1] * 2,
        "lee_translate_x": [1.0, 3.0, 2.0, 2.0], "lee_translate_y": [3.0, 5.0, 0.0, 0.0],
        "eq_t": [10.0, float("inf"), 20.0, 30.0],
    })
    out = per_model(table).set_index("model")
    assert out.loc["a", "lee_translate_x"] == 2.0 and out.loc["a", "lee_translate"] == 3.0
    assert out.loc["a", "eq_t"] == float("inf") and out.loc["b", "eq_t"] == 25.0
