"""The core package: its dependencies, its public names, and its house rules."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lielib

CORE = sorted(Path(lielib.__file__).parent.glob("*.py"))
MODULES = [f"lielib.{m.name}" for m in pkgutil.iter_modules(lielib.__path__) if not m.ispkg]
ALLOWED = {"torch", "numpy", "pandas", "__future__"} | set(sys.stdlib_module_names)

# Imports lielib and every core module with timm, torchvision and matplotlib unimportable.
_BLOCKED_IMPORT = """
import importlib, pkgutil, sys

BLOCKED = ("timm", "torchvision", "matplotlib", "seaborn", "papermill")

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the lielib core imported {name}")
        return None

sys.meta_path.insert(0, Block())
import lielib
names = [m.name for m in pkgutil.iter_modules(lielib.__path__) if not m.ispkg]
for name in names:
    importlib.import_module(f"lielib.{name}")
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), sorted(sys.modules)
assert "lielib.book" not in sys.modules
print(len(names))
"""


def test_core_imports_without_the_books_dependencies():
    root = Path(lielib.__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT], cwd=root, check=False,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(CORE) - 1  # every module but __init__


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_module_imports_torch_numpy_pandas_and_the_standard_library(path):
    for level, module, names in _imports(path):
        if level == 0:
            assert module.split(".")[0] in ALLOWED, f"{path.name} imports {module}"
        else:
            assert module.split(".")[0] != "book", f"{path.name} imports the book"
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.name} imports private names {private} from .{module}"


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_module_is_small_and_leaves_the_global_rng_alone(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.name} has over 400 lines"
    for call in ("torch.manual_seed", "torch.random.manual_seed", "torch.cuda.manual_seed",
                 "torch.seed(", "np.random.seed", "random.seed("):
        assert call not in text, f"{path.name} calls {call}"


@pytest.mark.parametrize("name", MODULES)
def test_core_module_has_an_explicit_all(name):
    module = importlib.import_module(name)
    assert isinstance(module.__all__, list) and module.__all__, name
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists undefined names {missing}"


def test_public_api_fits_one_screen():
    assert len(lielib.__all__) <= 20
    assert all(hasattr(lielib, n) for n in lielib.__all__)
    assert {"lee", "lie_derivative", "layerwise_lee", "get_action", "Layout"} <= set(lielib.__all__)
