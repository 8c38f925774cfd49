"""The book reproduces the paper: every derivative it takes names the paper's stencil.

The core's default stencil is the consistent ``central`` one; the paper's one-sided
``paper`` stencil must be asked for. A call in the book that relies on the default would
silently change the committed numbers, so each one passes ``stencil=`` explicitly.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import lielib
from lielib import decompose, lie, sensitivity
from lielib.actions import AffineAction, IntensityScaling
from lielib.tangents import tangents

ROOT = Path(__file__).resolve().parents[2]
#: Functions and methods that differentiate, and so depend on the stencil.
DERIVATIVES = {"lee", "lie_derivative", "lie_derivative_double_backward", "sensitivity_ratio",
               "layerwise_lee", "layerwise_contributions", "tangent", "tangents"}
# The benchmarks time lielib against its own double-backward path and compare the two
# under the same (default) stencil; they reproduce no number of the paper.
BENCHMARKS = {"bench.py", "bench_layers.py"}


def _book_files() -> list[Path]:
    files = sorted((ROOT / "lielib" / "book").rglob("*.py")) + sorted(
        (ROOT / "chapters").rglob("*.py"))
    return [p for p in files if p.name not in BENCHMARKS]


def _calls_without_stencil(path: Path, root: Path = ROOT) -> list[str]:
    missing = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in DERIVATIVES:
            continue
        keywords = {k.arg for k in node.keywords}
        if "stencil" not in keywords and None not in keywords:  # None: **kwargs passes it on
            missing.append(f"{path.relative_to(root)}:{node.lineno} {name}(...)")
    return missing


def test_the_core_defaults_to_the_central_stencil():
    for fn in (lie.lee, lie.lie_derivative, lie.lie_derivative_double_backward,
               sensitivity.sensitivity_ratio, decompose.layerwise_lee,
               decompose.layerwise_contributions, tangents, AffineAction.tangent,
               IntensityScaling.tangent):
        assert inspect.signature(fn).parameters["stencil"].default == "central", fn.__name__
    assert lielib.lee is lie.lee


def test_the_scan_finds_a_call_that_relies_on_the_default(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("lee(model, x)\nlee(model, x, stencil='paper')\n"
                      "get_action('rotate').tangent(x)\nlee(model, x, **kw)\n")
    assert _calls_without_stencil(sample, tmp_path) == ["sample.py:1 lee(...)",
                                                        "sample.py:3 tangent(...)"]


@pytest.mark.parametrize("path", _book_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_derivative_in_the_book_names_its_stencil(path):
    assert not _calls_without_stencil(path), (
        "pass stencil='paper' where the book reproduces the paper (or 'central' on purpose)")
