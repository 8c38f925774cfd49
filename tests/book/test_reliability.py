"""Reliability of what the book commits and writes: strict metadata, killed runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lielib.book.paths import ROOT


def _committed_json() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):  # not a checkout: every file in results/
        return sorted((ROOT / "results").rglob("*.json"))
    return [ROOT / p for p in out if p.endswith(".json")]


def _refuse(constant: str):
    raise ValueError(f"{constant} is not JSON")


def test_committed_results_json_is_strict_json():
    """``json.dumps`` writes NaN and Infinity, which no strict parser reads."""
    files = _committed_json()
    assert files, "no committed results/**/*.json found"
    bad = []
    for path in files:
        if not path.is_file():  # deleted in the working tree
            continue
        try:
            json.loads(path.read_text(), parse_constant=_refuse)
        except ValueError as err:
            bad.append(f"{path.relative_to(ROOT)}: {err}")
    assert not bad, "\n".join(bad)


def test_the_strict_parser_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        json.loads('{"accuracy": NaN}', parse_constant=_refuse)


# --- python -m lielib.book.aliasing refuses to do nothing quietly ----------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--zoo", "nope"], "unknown zoo models"),
        (["--only", "layerwise", "methds"], "invalid choice"),
        (["--num-zoo-images", "0"], "num_zoo_images must be a positive integer"),
        (["--actions"], "expected at least one argument"),
        (["--actions", "spin"], "unknown action 'spin'"),
    ],
    ids=["zoo-typo", "only-typo", "no-images", "actions-empty", "actions-typo"],
)
def test_aliasing_cli_rejects_bad_arguments(argv, needle, capsys):
    from lielib.book import aliasing

    with pytest.raises(SystemExit) as err:
        aliasing.main(argv)
    assert err.value.code == 2
    assert needle in capsys.readouterr().err


def test_aliasing_fails_when_every_model_is_skipped(tmp_path, monkeypatch, capsys):
    from lielib.book import aliasing, zoo

    assert set(aliasing.DEFAULT_ZOO) <= set(zoo.zoo_names())
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path / "cache"))  # no checkpoints here
    argv = ["--imagenet", "--zoo", "resnet-small", "--only", "layerwise", "--out",
            str(tmp_path / "out")]
    assert aliasing.main(argv) == 1
    err = capsys.readouterr().err
    assert "nothing measured" in err and "zoo:resnet-small: MissingCheckpointError" in err
    assert not (tmp_path / "out").exists()


# --- a killed training run leaves the old result or the new one ------------------------------

_DRIVER = """
import sys
import torch
from lielib.book import zoo, zoo_train
zoo._BY_NAME["tiny"] = zoo.ZooEntry("tiny", "resnet10t", "cnn", "resnet", "small", n_train=96)
gen = torch.Generator().manual_seed(0)
x, y = torch.randn(96, 1, 32, 32, generator=gen), torch.randint(0, 10, (96,), generator=gen)
data = {"train": (x, y), "test": (x[:40], y[:40])}
zoo_train.fashion_mnist = lambda split, root=None: data[split]
sys.exit(zoo_train.main(["--only", "tiny", "--steps", "6", "--cache", sys.argv[1],
                         "--results", sys.argv[2], "--no-progress"]))
"""
_TIMINGS = {"train_time_s"}


def _train(folder: Path, *, kill_after: float | None = None) -> float:
    """Run the driver; SIGKILL it after ``kill_after`` seconds. Returns the seconds it ran."""
    import sys
    import time

    cmd = [sys.executable, "-c", _DRIVER, str(folder / "cache"), str(folder / "results")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=kill_after if kill_after is not None else 120)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.communicate()
        return time.perf_counter() - start
    assert proc.returncode == 0, err.decode()[-2000:]
    return time.perf_counter() - start


def _outcome(folder: Path) -> tuple:
    import torch

    from lielib.book.results import read_json, read_table
    from lielib.book.training import load_checkpoint

    run = read_json(folder / "results" / "models" / "tiny.json")
    record = {k: v for k, v in run["record"].items() if k not in _TIMINGS}
    table, _ = read_table(folder / "results" / "accuracy.csv")
    state = load_checkpoint(folder / "cache" / "tiny" / "final.pt")["model"]
    return (record, run["curve"], run["snapshots"],
            table.drop(columns=sorted(_TIMINGS)),
            {k: v for k, v in state.items() if isinstance(v, torch.Tensor)})


def test_training_killed_at_random_points_then_rerun_equals_an_uninterrupted_run(tmp_path):
    import random

    import pandas as pd
    import torch

    reference = tmp_path / "reference"
    full = _train(reference)
    interrupted = tmp_path / "interrupted"
    rng = random.Random(0)
    for _ in range(3):
        _train(interrupted, kill_after=rng.uniform(0.4, 1.0) * full)
    _train(interrupted)
    want, got = _outcome(reference), _outcome(interrupted)
    assert got[:3] == want[:3]
    pd.testing.assert_frame_equal(got[3], want[3])
    assert got[4].keys() == want[4].keys()
    assert all(torch.equal(got[4][k], want[4][k]) for k in want[4])
    leftovers = [p for p in interrupted.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers
