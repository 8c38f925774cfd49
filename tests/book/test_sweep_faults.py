"""Fault injection: a sweep killed (SIGKILL of it and every process it started) at seeded random
moments, several times, then run to completion, merges to the table of a run that was
never interrupted; after every kill each table present is whole and equal to the
uninterrupted run's, and merge reads only those."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import stand_in_checkpoints

from lielib.book import sweep
from lielib.book.modelsets import set_models
from lielib.book.results import ROOT
from lielib.book.sweep.merging import table_files

# Values depend on the model only, so two runs of the same models give the same table;
# a few thousand rows make each write last long enough for a kill to land inside it.
WORKER = '''\
# %% tags=["parameters"]
models = ["a"]
source = "zoo-init"
out = ""
command = ""
rows = 10000
pause = 0.3

# %%
import hashlib
import time

import numpy as np
import pandas as pd

from lielib.book.results import metadata, write_table
from lielib.book.sweep import run_models


def work(model, target):
    rng = np.random.default_rng(int(hashlib.sha256(model.encode()).hexdigest()[:12], 16))
    time.sleep(pause)
    frame = pd.DataFrame({"model": model, "image": np.arange(rows),
                          "value": rng.standard_normal(rows), "other": rng.random(rows)})
    write_table(target, frame, metadata(command=command, seed=0))


status = run_models(models, out, work, command=command)
'''
SEED = 20260
ROWS = 10000  # the worker's default
KILLS = 4


def _command(chapter: Path, out: Path, models: list[str], local: bool) -> list[str]:
    cmd = [sys.executable, "-m", "lielib.book.sweep", str(chapter), "--models", "zoo-init",
           "--only", *models, "--out", str(out), "--no-progress"]
    if local:
        cmd += ["--executor", "local", "--shards", "2", "--log-dir", str(out.parent / "logs")]
    return cmd


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def _check_partial(out: Path, reference: pd.DataFrame, tmp_path: Path) -> set[str]:
    """Every table present is whole and equal to the uninterrupted run's; merge agrees."""
    present = set()
    for path in table_files(out):
        table, _, model = sweep.read_model_table(path)  # raises on a torn or unmatched table
        pd.testing.assert_frame_equal(
            table, reference[reference["model"] == model].reset_index(drop=True))
        present.add(model)
    if present:
        _, merged = sweep.merge(out, output=tmp_path / "partial.csv")
        assert set(merged["model"]) == present and len(merged) == ROWS * len(present)
    return present


def _sweep_pids(marker: bytes) -> list[int]:
    """Live processes (not zombies) whose environment holds ``marker``: a sweep and its kernels."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes() and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def _kill_sweep(proc: subprocess.Popen, marker: str, timeout: float = 60.0) -> None:
    """SIGKILL the sweep and every process it started, as a crash or a job kill would; wait.

    Jupyter starts each kernel in a session of its own, so the sweep's process group does
    not hold its kernels: they are found by the marker in their environment. Killing only
    the group would leave a kernel measuring (and writing tables) until its parent poller
    notices, about a second later.
    """
    with contextlib.suppress(ProcessLookupError):  # it may have finished on its own
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its shards
    if not Path("/proc").is_dir():  # no way to find the kernels: let their poller end them
        time.sleep(3.0)
        return
    deadline = time.time() + timeout
    while pids := _sweep_pids(marker.encode()):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.time() > deadline:
            raise AssertionError(f"processes {pids} of the killed sweep survive SIGKILL")
        time.sleep(0.05)


def _work_started(out: Path, since: float, proc: subprocess.Popen) -> bool:
    """Wait until the kernel has begun its first model (a fresh "started" record)."""
    while proc.poll() is None:
        records = (out / "failures").glob("*.json") if (out / "failures").is_dir() else []
        if any(r.stat().st_mtime >= since for r in records):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sweep_killed_at_random_moments_then_resumed_equals_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kill moments: seeded, uniform over the span in which the models are measured and
    written (the kernel's start-up, the same every run, is left to the other tests). Once a
    killed run has finished every model, the next runs use ``--force``, so kills land in
    rewrites of existing tables too: each must stay the old table or become the new one."""
    chapter = tmp_path / "deterministic_worker.py"
    chapter.write_text(WORKER)
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path / "cache"))
    stand_in_checkpoints()  # zoo-init names six models; the worker above loads none
    models = set_models("zoo-init")[:6]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    since = time.time() - 1.0  # file times can be as coarse as a second
    proc = subprocess.Popen(_command(chapter, tmp_path / "reference", models, local=False),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert _work_started(tmp_path / "reference", since, proc)
    begun = time.time()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    _, reference = sweep.merge(tmp_path / "reference", set_name="zoo-init")
    span = max(p.stat().st_mtime for p in table_files(tmp_path / "reference")) - begun

    rng = random.Random(SEED)
    out = tmp_path / "out"
    modes = [False, True] * (KILLS // 2) + [False] * (KILLS % 2)
    rng.shuffle(modes)
    seen: list[set[str]] = []
    interrupted, force = 0, False
    for local in modes:
        delay = rng.uniform(0.0, span)
        since = time.time() - 1.0
        cmd = _command(chapter, out, models, local) + (["--force"] if force else [])
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if _work_started(out, since, proc):
            time.sleep(delay)
        _kill_sweep(proc, f"LIELIB_CACHE={tmp_path / 'cache'}")  # sweep, shards, kernels
        interrupted += proc.wait() == -signal.SIGKILL
        seen.append(_check_partial(out, reference, tmp_path) if out.is_dir() else set())
        print(f"killed {'local' if local else 'plain'}{' --force' if force else ''} sweep "
              f"{delay:.2f} s into its work (span {span:.2f} s): {len(seen[-1])} tables",
              flush=True)
        force = force or seen[-1] == set(models)  # all done: kill rewrites from now on
    assert interrupted >= KILLS // 2, f"only {interrupted} of {KILLS} kills found the sweep running"
    assert seen[0] != set(models), "the first kill came after the sweep had finished"

    res = _run(_command(chapter, out, models, local=True), env)
    assert res.returncode == 0, res.stdout + res.stderr
    merged = pd.read_csv(tmp_path / "out.csv")
    pd.testing.assert_frame_equal(merged, reference)
    _, merged_again = sweep.merge(out, set_name="zoo-init")
    pd.testing.assert_frame_equal(merged_again, reference)
    assert not list((out / "failures").glob("*.json"))
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name], "temporaries left behind"
