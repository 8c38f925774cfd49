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
