"""The module calls a layer-wise measurement visits, recorded by one forward pass.

A :class:`Site` is one call of one measured unit (:func:`lielib.selection.select_modules`)
with its input ``x_m`` and the layouts of its input and output
(:class:`lielib.selection.ModelLayouts`). Hooks live in :func:`module_hooks`, which
removes them on exit, even on error; :func:`no_inplace` switches in-place activations
to out-of-place while measuring, since they overwrite the input a site records.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .layout import Layout, to_nchw
from .lie import flag_off
from .selection import ModelLayouts, layer_kind

__all__ = ["Site", "module_hooks", "no_inplace", "record_sites", "spatial_hw"]


@contextlib.contextmanager
def module_hooks(
    hooks: Iterable[tuple[nn.Module, str, Callable]],
) -> Iterator[None]:
    """Register ``(module, "pre" | "forward", fn)`` hooks; remove all of them on exit."""
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn))
            elif kind == "forward":
                handles.append(module.register_forward_hook(fn))
            else:
                raise ValueError(f"unknown hook kind {kind!r}; use 'pre' or 'forward'")
        yield
    finally:
        for h in handles:
            h.remove()


def no_inplace(model: nn.Module):
    """Switch modules with a boolean ``inplace`` flag to out-of-place; restore on exit.

    An in-place activation overwrites its input, which a layer-wise measurement needs.
    """
    return flag_off(model, "inplace")


@dataclass
class Site:
    """One call of one measured unit.

    Attributes:
        name: qualified module name; ``call`` counts repeated calls of the same module.
        order: execution order among the sites (by call start).
        split_child: for a split norm-activation layer, the child whose share is removed.
        lie: ``L m(x_m)``, shaped like the module's output.
    """

    name: str
    module_type: str
    layer_kind: str
    call: int
    order: int
    downsampling: bool
    in_layout: Layout | None
    out_layout: Layout | None
    split_child: str | None = None
    module: nn.Module | None = field(default=None, repr=False)
    x: torch.Tensor | None = field(default=None, repr=False)
    lie: torch.Tensor | None = field(default=None, repr=False)


def spatial_hw(t: torch.Tensor, layout: Layout | None) -> tuple[int, int] | None:
    """The ``(H, W)`` grid of ``t`` laid out as ``layout``; ``None`` for an invariant tensor."""
    if layout is None:
        return None
    return tuple(to_nchw(t, layout)[0].shape[-2:])


def record_sites(
    model: nn.Module, x: torch.Tensor, units: list[tuple[str, str | None]], *,
    in_layout: str | Layout = "NCHW",
) -> list[Site]:
    """One forward pass that records each unit's call: its input (cloned) and layouts.

    Args:
        units: ``(name, split_child)`` pairs, as :func:`lielib.selection.select_modules`
            returns them.
        in_layout: the layout of the model's input ``x`` (its image grid sizes the
            token grids of ViT-like models).

    Returns:
        One :class:`Site` per call of a unit, in execution order (by call start).
    """
    named = dict(model.named_modules())
    layouts = ModelLayouts(model, to_nchw(x, in_layout)[0].shape)
    state = {"after": False}
    counter = itertools.count()
    calls: dict[str, int] = defaultdict(int)
    open_calls: dict[str, list[dict]] = defaultdict(list)
    records: list[dict] = []

    def pre(name: str) -> Callable:
        def hook(m: nn.Module, args: tuple) -> None:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if not args or not isinstance(args[0], torch.Tensor) or len(tensors) != 1:
                raise ValueError(
                    f"module {name!r} ({type(m).__name__}) takes {len(tensors)} tensor "
                    "arguments; the layer-wise decomposition measures modules of one tensor. "
                    "Pass modules= to choose other units"
                )
            rec = {"name": name, "call": calls[name], "order": next(counter),
                   "x": args[0].detach().clone(), "after": state["after"]}
            calls[name] += 1
            open_calls[name].append(rec)

        return hook

    def post(name: str) -> Callable:
        def hook(m: nn.Module, args: tuple, out) -> None:
            rec = open_calls[name].pop()
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"module {name!r} ({type(m).__name__}) returns {type(out).__name__}, not "
                    "one tensor; pass modules= to choose other units"
                )
            rec["y"] = out.detach()
            records.append(rec)

        return hook

    def boundary_done(m: nn.Module, args: tuple, out) -> None:
        state["after"] = True

    hooks = []
    for name, _ in units:
        hooks += [(named[name], "pre", pre(name)), (named[name], "forward", post(name))]
    if layouts.boundary is not None:
        hooks.append((layouts.boundary, "forward", boundary_done))
    with module_hooks(hooks), torch.no_grad():
        model(x)
    split = dict(units)
    missing = [n for n, _ in units if calls[n] == 0]
    if missing and len(missing) == len(units):
        raise ValueError(f"none of the selected modules ran in the forward pass: {missing[:5]}")
    records.sort(key=lambda r: r["order"])
    sites = []
    for k, rec in enumerate(records):
        m = named[rec["name"]]
        lin, lout = layouts.resolve(rec["name"], rec["x"], rec["y"],
                                    after_boundary=rec["after"])
        hw_in, hw_out = spatial_hw(rec["x"], lin), spatial_hw(rec["y"], lout)
        down = hw_in is not None and (hw_out is None or hw_out[0] * hw_out[1] < hw_in[0] * hw_in[1])
        sites.append(Site(rec["name"], type(m).__name__, layer_kind(m), rec["call"], k, down,
                          lin, lout, split[rec["name"]], m, rec["x"]))
    return sites
