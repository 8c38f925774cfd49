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
