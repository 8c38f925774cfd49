"""Recorded module calls: hooks removed on exit and on error, in-place flags restored."""

from __future__ import annotations

import pytest
import torch
from toy_models import DT, image, toy

from lielib.layout import Layout
from lielib.selection import select_modules
from lielib.sites import module_hooks, no_inplace, record_sites, spatial_hw


def test_module_hooks_removed_on_exit_and_on_error():
    model, seen = toy(), []
    hooks = [(model[0], "pre", lambda m, a: seen.append("pre")),
             (model[0], "forward", lambda m, a, o: seen.append("forward"))]
    with module_hooks(hooks), torch.no_grad():
        model(image())
    assert seen == ["pre", "forward"]
    with pytest.raises(RuntimeError, match="boom"), module_hooks(hooks):
        raise RuntimeError("boom")
    bad = [(model[0], "forward", print), (model[1], "backward", print)]
    with pytest.raises(ValueError, match="unknown hook kind"), module_hooks(bad):
        pass
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_no_inplace_restores_the_flags_even_on_error():
    model = toy(inplace=True)
    with pytest.raises(RuntimeError, match="boom"), no_inplace(model):
        assert model[1].inplace is False
        raise RuntimeError("boom")
    assert model[1].inplace is True


def test_record_sites_in_execution_order_with_inputs_and_layouts():
    model, x = toy(), image(2)
    sites = record_sites(model, x, select_modules(model))
    assert [s.name for s in sites] == [str(k) for k in range(9)]
    assert [s.order for s in sites] == list(range(len(sites)))
    first, flatten, fc = sites[0], sites[7], sites[8]
    assert torch.equal(first.x, x) and first.x is not x
    assert (first.in_layout, first.out_layout) == (Layout("NCHW"), Layout("NCHW"))
    assert (flatten.in_layout, flatten.out_layout) == (Layout("NCHW"), None)
    assert (fc.in_layout, fc.out_layout) == (None, None)
    # stride-2 conv, max pool, global pool, and flatten (a 1x1 grid to none)
    assert [s.name for s in sites if s.downsampling] == ["2", "5", "6", "7"]
    assert spatial_hw(torch.zeros(1, 5, 3, 2, dtype=DT), Layout("NHWC")) == (5, 3)
    assert spatial_hw(torch.zeros(1, 7), None) is None


def test_record_sites_refuses_modules_of_several_tensors():
    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.two = Two()

        def forward(self, x):
            return self.two(x, x).mean((-2, -1))

    with pytest.raises(ValueError, match="one tensor"):
        record_sites(Net(), image(), [("two", None)])
