"""Every public function of the core shows a short runnable example, and every example runs."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest
import torch

import lielib

MODULES = [f"lielib.{m.name}" for m in pkgutil.iter_modules(lielib.__path__) if not m.ispkg]
# Modules whose every public name (``__all__``) a user calls directly.
USER_FACING = ["lielib.metrics", "lielib.fourier", "lielib.budget", "lielib.layout",
               "lielib.shifts"]
# Further public helpers a user reaches for, by module.
HELPERS = {
    "lielib.actions": ["Action", "AffineAction", "IntensityScaling", "generator_on",
                       "get_action", "list_actions"],
    "lielib.tangents": ["tangents", "generator_coordinates", "span_basis"],
    "lielib.sampling": ["affine_sample", "normalized_grid"],
    "lielib.selection": ["select_modules", "layer_kind"],
    "lielib.sensitivity": ["sensitivity_ratio", "reference_generator", "random_phases",
                           "phase_randomize"],
    "lielib.lie": ["lee", "lie_derivative", "lie_derivative_double_backward", "action_list",
                   "output_fn", "reduce_classes"],
    "lielib.prepare": ["measuring", "fold_batchnorm", "check_seed", "seeded_generator"],
    "lielib.decompose": ["layerwise_lee", "layerwise_contributions"],
}


def _documented() -> list[tuple[str, str]]:
    names = [("lielib", n) for n in lielib.__all__]
    for module in USER_FACING:
        names += [(module, n) for n in importlib.import_module(module).__all__
                  if callable(getattr(importlib.import_module(module), n))]
    names += [(module, n) for module, ns in HELPERS.items() for n in ns]
    return names


@pytest.mark.parametrize(("module", "name"), _documented(), ids=lambda v: v)
def test_public_function_has_an_example(module, name):
    obj = getattr(importlib.import_module(module), name)
    assert ">>>" in (inspect.getdoc(obj) or ""), f"{module}.{name} has no >>> example"


@pytest.mark.parametrize("module", MODULES)
def test_examples_run(module):
    mod = importlib.import_module(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {module} failed"
