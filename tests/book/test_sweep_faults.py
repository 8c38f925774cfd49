"""Fault injection: a sweep killed (SIGKILL of its whole process group) at seeded random
moments, several times, then run to completion, merges to the table of a run that was
never interrupted; after every kill each table present is whole and equal to the
uninterrupted run's, and merge reads only those."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lielib.book import sweep
from lielib.book.modelsets import set_models
from lielib.book.results import ROOT
from lielib.book.sweep.merging import table_files

# Values depend on the model only, so two runs of the same models give the same table;
# a few thousand rows make each write last long enough for a kill to land inside it.
WORKER = '''\
# %% tags=["parameters"]
models = ["a"]
source = "lite"
out = ""
command = ""
rows = 4000
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
KILLS = 5


def _command(chapter: Path, out: Path, models: list[str], local: bool) -> list[str]:
    cmd = [sys.executable, "-m", "lielib.book.sweep", str(chapter), "--models", "lite",
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
        assert set(merged["model"]) == present and len(merged) == 4000 * len(present)
    return present


@pytest.mark.slow
def test_sweep_killed_at_random_moments_then_resumed_equals_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    chapter = tmp_path / "deterministic_worker.py"
    chapter.write_text(WORKER)
    models = set_models("lite")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIELIB_CACHE": str(tmp_path / "cache")}

    start = time.monotonic()
    res = _run(_command(chapter, tmp_path / "reference", models, local=False), env)
    duration = time.monotonic() - start
    assert res.returncode == 0, res.stdout + res.stderr
    _, reference = sweep.merge(tmp_path / "reference", set_name="lite")

    rng = random.Random(SEED)
    out = tmp_path / "out"
    seen: list[set[str]] = []
    for _ in range(KILLS):
        local = rng.random() < 0.5
        delay = rng.uniform(0.0, duration)
        proc = subprocess.Popen(_command(chapter, out, models, local), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its shards and their kernels
        proc.wait()
        seen.append(_check_partial(out, reference, tmp_path) if out.is_dir() else set())
        print(f"killed {'local' if local else 'plain'} sweep after {delay:.1f} s of {duration:.1f}: "
              f"{len(seen[-1])} tables", flush=True)
    assert any(s != set(models) for s in seen), "every kill came after the sweep had finished"

    res = _run(_command(chapter, out, models, local=True), env)
    assert res.returncode == 0, res.stdout + res.stderr
    merged = pd.read_csv(tmp_path / "out.csv")
    pd.testing.assert_frame_equal(merged, reference)
    _, merged_again = sweep.merge(out, set_name="lite")
    pd.testing.assert_frame_equal(merged_again, reference)
    assert not list((out / "failures").glob("*.json"))
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name], "temporaries left behind"
