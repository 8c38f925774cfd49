"""Sweeps through submitit: real local processes per shard, failures, a killed shard, resume;
the Slurm array's sbatch script, and that script run task by task with Slurm's variables."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import FAKE_CHAPTER, models_of, stand_in_checkpoints

from lielib.book import sweep
from lielib.book.sweep.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def fake_chapter(tmp_path: Path) -> Path:
    path = tmp_path / "fake_chapter.py"
    path.write_text(FAKE_CHAPTER)
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path / "cache"))
    stand_in_checkpoints()


def _args(chapter: Path, out: Path, models: list[str], *extra: str) -> list[str]:
    return [str(chapter), "--models", "zoo-init", "--only", *models, "--out", str(out),
            "--no-progress", "--log-dir", str(out.parent / "logs"), *extra]


def test_local_executor_runs_shards_in_parallel_processes_and_merges(
    fake_chapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = models_of("zoo-init", 4)
    out = tmp_path / "out"
    code = main(_args(fake_chapter, out, models, "--executor", "local", "--shards", "2",
                      "-p", "sleep", "2"))
    text = capsys.readouterr().out
    assert code == 0, text
    assert "submitted 2 shards (local)" in text and "done 4, already there 0, failed 0" in text
    tables = {m: pd.read_csv(sweep.result_path(out, m)) for m in models}
    kernels = [{int(tables[m]["pid"].iloc[0]) for m in sweep.shard(models, i, 2)} for i in range(2)]
    assert all(len(k) == 1 for k in kernels) and kernels[0] != kernels[1]  # one kernel per shard
    spans = [(min(tables[m]["kernel_start"].iloc[0] for m in sweep.shard(models, i, 2)),
              max(tables[m]["end"].iloc[0] for m in sweep.shard(models, i, 2))) for i in range(2)]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], "the shards did not overlap"
    merged = pd.read_csv(tmp_path / "out.csv")
    assert merged.groupby("model").size().to_dict() == {m: 2 for m in models}
    meta = json.loads((tmp_path / "out.meta.json").read_text())
    assert meta["models"] == models and meta["failures"] == []
    assert not set(models) & set(meta["missing"])  # the rest of the set was not asked for
    assert meta["sweep_commands"] == [
        "python -m lielib.book.sweep " + " ".join(
            _args(fake_chapter, out, models, "--executor", "local", "--shards", "2", "-p", "sleep", "2"))]


def test_failed_model_and_killed_shard_then_resume(
    fake_chapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Shard 0 has a failing model, shard 1 is killed mid-way; a rerun does just those two."""
    models = models_of("zoo-init", 6)
    out = tmp_path / "out"
    shards = [sweep.shard(models, i, 3) for i in range(3)]
    failing, killer = shards[0][0], shards[1][1]
    code = main(_args(fake_chapter, out, models, "--executor", "local", "--shards", "3",
                      "-p", "fail_on", failing, "-p", "kill_shard_on", killer))
    text = capsys.readouterr().out
    assert code == 1, text
    assert "shard 1/3 did not finish" in text and "not merged: 2 models have no table" in text
    assert not (tmp_path / "out.csv").exists()
    have = sorted(p.stem for p in out.glob("*.csv"))
    assert have == sorted(set(models) - {failing, killer})
    assert json.loads(sweep.failure_path(out, failing).read_text())["stage"] == "failed"
    assert json.loads(sweep.failure_path(out, killer).read_text())["stage"] == "started"
    before = {m: sweep.result_path(out, m).stat().st_mtime_ns for m in have}

    code = main(_args(fake_chapter, out, models, "--executor", "local", "--shards", "3"))
    text = capsys.readouterr().out
    assert code == 0, text
    assert "done 2, already there 4, failed 0" in text
    assert {m: sweep.result_path(out, m).stat().st_mtime_ns for m in have} == before
    assert not list((out / "failures").glob("*.json"))
    merged = pd.read_csv(tmp_path / "out.csv")
    assert merged.groupby("model").size().to_dict() == {m: 2 for m in models}


FAKE_SBATCH = """#!/bin/sh
cp "$1" "$FAKE_SBATCH_COPY"
echo "Submitted batch job 4242"
"""
FAKE_SRUN = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --unbuffered) shift ;;
    --output|--error) shift 2 ;;
    *) break ;;
  esac
done
exec "$@"
"""


def _fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sbatch`` that keeps the script it is given, ``srun`` that runs its command here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_COPY", str(tmp_path / "submitted.sh"))
    return tmp_path / "submitted.sh"


def test_slurm_array_script_and_its_tasks(
    fake_chapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script_copy = _fake_slurm(tmp_path, monkeypatch)
    models = models_of("zoo-init", 5)
    out = tmp_path / "out"
    logs = tmp_path / "logs"
    code = main(_args(fake_chapter, out, models, "--executor", "slurm", "--shards", "3",
                      "--partition", "gpu", "--gpus-per-task", "1", "--cpus-per-task", "8",
                      "--mem-gb", "32", "--time", "90", "--array-parallelism", "2",
                      "--account", "lab", "--setup", "export HF_HUB_OFFLINE=1"))
    text = capsys.readouterr().out
    assert code == 0, text
    assert "submitted 3 shards (slurm): jobs 4242_0, 4242_1, 4242_2" in text
    assert f"python -m lielib.book.sweep merge {out} --models zoo-init" in text
    script = script_copy.read_text()
    lines = script.splitlines()
    for flag in ["--array=0-2%2", "--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=8",
                 "--mem=32GB", "--time=90", "--account=lab", "--requeue", "--signal=USR2@90",
                 "--job-name=lielib-sweep", "--open-mode=append",
                 f"--output={logs}/%A_%a/%A_%a_0_log.out"]:
        assert f"#SBATCH {flag}" in lines, (flag, script)
    assert lines.index("export HF_HUB_OFFLINE=1") < lines.index("export SUBMITIT_EXECUTOR=slurm")
    command = lines[lines.index("export SUBMITIT_EXECUTOR=slurm") + 1]
    assert command.startswith("srun --unbuffered --output")
    assert command.endswith(f"{sys.executable} -u -m submitit.core._submit {logs}/%j")
    assert not list(out.glob("*.csv"))  # nothing ran yet

    # What Slurm would do: run the script once per array task, with its variables.
    for task in range(3):
        env = {**os.environ, "SLURM_JOB_ID": str(5000 + task), "SLURM_ARRAY_JOB_ID": "4242",
               "SLURM_ARRAY_TASK_ID": str(task), "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
               "SLURM_NODEID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
               "SLURM_JOB_NODELIST": "node1"}
        res = subprocess.run(["bash", str(script_copy)], env=env, capture_output=True,
                             text=True, timeout=600, check=False)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        status = pd.read_pickle(logs / f"4242_{task}" / f"4242_{task}_0_result.pkl")
        assert status[0] == "success"
        assert status[1]["done"] == sweep.shard(models, task, 3)
    assert main(["merge", str(out), "--models", "zoo-init"]) == 0
    merged = pd.read_csv(tmp_path / "out.csv")
    assert merged.groupby("model").size().to_dict() == {m: 2 for m in models}


def test_slurm_needs_a_shard_count(fake_chapter: Path, tmp_path: Path, monkeypatch) -> None:
    _fake_slurm(tmp_path, monkeypatch)
    with pytest.raises(SystemExit):
        main(_args(fake_chapter, tmp_path / "out", models_of("zoo-init", 2), "--executor", "slurm"))
