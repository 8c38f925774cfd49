"""Layer-wise decomposition of the Lie derivative.

By the chain rule the Lie derivative of a network splits over its modules,
``L f(x) = sum_m J_{>m} L m(x_m) + r``, where ``L m(x_m) = J_m tau_in(x_m) - tau_out(y_m)``
is module ``m``'s own Lie derivative (its input transformed, its output transformed back,
each tensor with its own layout, see :mod:`lielib.selection`), ``J_{>m}`` is the
Jacobian of the rest of the network (softmax included) at the module's output, and ``r``
collects what no hooked module covers (functional operations such as adding a
positional embedding). A module's contribution is ``value = ||J_{>m} L m||^2``, the sum of
squares over classes of its signed contribution (signed shares that add up: :mod:`lielib.budget`).

Two methods:

* ``"exact"``: one plain forward pass records every module's input; each ``L m`` is a
  small ``jvp`` of the module alone; then all contributions are injected at once as
  coefficients ``a_m`` in ``F(a) = softmax(model(x))`` with forward hooks
  ``y_m -> y_m + a_m L m``, so that ``dF/da_m = J_{>m} L m``. With ``C`` classes and
  ``M`` modules the Jacobian ``dF/da`` is obtained either by forward mode (``vmap`` of
  ``jvp`` over the rows of the identity, one shared primal per chunk of modules in
  execution order, so that no tangent is computed upstream of a chunk's first module)
  or by reverse mode (``C`` backward passes) when ``C <= M / 4``, the cheaper of the two.
* ``"probes"``: the paper's estimator, ``E_z (z^T J_{>m} L m)^2`` with Gaussian ``z`` on
  the output, one backward pass per probe (through the same coefficients).

In-place activations are switched to out-of-place while measuring (and restored), hooks
live in a context manager that removes them even on error (:mod:`lielib.sites`), and the
model is measured in eval mode (:func:`lielib.lie.measuring`).
"""

from __future__ import annotations

import numbers
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.func import jvp, vmap

from .actions import Action, check_image, check_model, get_action
from .layout import Layout, to_nchw
from .lie import action_list, lie_derivative, measuring, output_fn
from .prepare import check_input, check_seed, seeded_generator, tensor_output
from .selection import select_modules
from .sites import Site, module_hooks, no_inplace, record_sites
from .tangents import TangentOperator

__all__ = [
    "METHODS",
    "RESIDUAL",
    "Decomposition",
    "checked_input",
    "contributions_frame",
    "layerwise_contributions",
    "layerwise_lee",
]

METHODS = ("exact", "probes")
#: The ``module`` name of the residual row: what no measured module covers.
RESIDUAL = "(residual)"


@dataclass
class Decomposition:
    """Result of :func:`layerwise_contributions`.

    Attributes:
        sites: the measured units in execution order (``M`` of them).
        values: ``(M + 1, B)``: ``||J_{>m} L m||^2`` per site and image (exact or probe
            estimate); the last row is the residual.
        contributions: ``(M, B, C)`` signed ``J_{>m} L m`` (``None`` for probes).
        residual: ``(B, C)``: ``L f - sum_m J_{>m} L m`` (``None`` for probes).
        total: ``(B, C)``: the end-to-end ``L f`` of :func:`lielib.lie_derivative`.
        mode: ``"forward"``/``"reverse"`` for exact, ``"probes"`` otherwise.
    """

    sites: list[Site]
    values: torch.Tensor
    contributions: torch.Tensor | None
    residual: torch.Tensor | None
    total: torch.Tensor
    mode: str


def _module_lie(site: Site, tangent: TangentOperator) -> torch.Tensor:
    """``L m(x_m) = J_m tau_in(x_m) - tau_out(y_m)``; ``tau`` of an invariant tensor is 0."""
    m, x = site.module, site.x
    if site.in_layout is None:
        y = m(x)
        dy = torch.zeros_like(y)
    else:
        y, dy = jvp(m, (x,), (tangent(x, site.in_layout),))
    if site.out_layout is not None:
        dy = dy - tangent(y, site.out_layout)
    return dy


def _attach_lies(sites: list[Site], action: Action, stencil: str) -> None:
    tangent = TangentOperator(action, stencil)
    with torch.no_grad():
        for s in sites:
            s.lie = _module_lie(s, tangent)
        by_key = {(s.name, s.order): s for s in sites}
        for s in sites:
            if s.split_child is None:
                continue
            child_name = f"{s.name}.{s.split_child}" if s.name else s.split_child
            child = min((c for (n, o), c in by_key.items() if n == child_name and o > s.order),
                        key=lambda c: c.order, default=None)
            if child is None:
                raise RuntimeError(f"the activation {child_name!r} of {s.name!r} did not run")
            s.lie = s.lie - child.lie


def _injection_hooks(model: nn.Module, sites: list[Site], coef_for: Callable) -> tuple:
    """Forward hooks ``y_m -> y_m + coef_for(j, y_m) * L m`` for the sites, per call."""
    named = dict(model.named_modules())
    index = {(s.name, s.call): j for j, s in enumerate(sites)}
    calls: dict[str, int] = defaultdict(int)

    def hook(name: str) -> Callable:
        def fn(m: nn.Module, args: tuple, out: torch.Tensor):
            c = calls[name]
            calls[name] += 1
            j = index.get((name, c))
            if j is None:
                return None
            return out + coef_for(j, out) * sites[j].lie

        return fn

    hooks = [(named[n], "forward", hook(n)) for n in dict.fromkeys(s.name for s in sites)]
    return hooks, calls


def _is_vmap_inplace_error(err: RuntimeError) -> bool:
    return "vmap" in str(err).lower() and any(w in str(err).lower() for w in ("inplace", "in-place"))


def _exact_forward(model, x, sites, f, chunk_size: int) -> torch.Tensor:
    """``(M, B, C)`` by forward mode, chunks of sites in execution order."""
    out = []
    start = 0
    while start < len(sites):
        end = min(start + chunk_size, len(sites))
        lo = start
        while True:
            try:
                d = _forward_chunk(model, x, sites[lo:end], f)
                break
            except RuntimeError as err:
                # A tensor computed before the chunk's first site and modified in place by
                # one that carries tangents cannot hold them under vmap: start earlier.
                if lo == 0 or not _is_vmap_inplace_error(err):
                    raise
                lo -= 1
        out.append(d[start - lo:])
        start = end
    return torch.cat(out)


def _forward_chunk(model, x, chunk, f) -> torch.Tensor:
    state: dict = {}
    hooks, calls = _injection_hooks(model, chunk, lambda j, out: state["coef"][j])

    def F(coef: torch.Tensor) -> torch.Tensor:
        state["coef"] = coef
        calls.clear()
        return f(model(x))

    k = len(chunk)
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    zero = torch.zeros(k, dtype=x.dtype, device=x.device)
    with module_hooks(hooks), torch.no_grad():
        return vmap(lambda e: jvp(F, (zero,), (e,))[1])(eye)


def _reverse_graph(model, x, sites, f):
    """Forward pass with coefficients ``a`` ``(M, B)``; returns ``(a, softmax output)``."""
    a = torch.zeros(len(sites), x.shape[0], dtype=x.dtype, device=x.device, requires_grad=True)

    def coef(j: int, out: torch.Tensor) -> torch.Tensor:
        return a[j].view(-1, *([1] * (out.ndim - 1)))

    hooks, _ = _injection_hooks(model, sites, coef)
    with module_hooks(hooks), torch.enable_grad():
        p = f(model(x))
    return a, p


def _exact_reverse(model, x, sites, f, num_classes: int) -> torch.Tensor:
    """``(M, B, C)`` by reverse mode: the rows of ``dF/da``, one backward pass per class.

    One at a time: batching them (``is_grads_batched``) was slower on a CPU (0.33 s
    against 0.24 s per class for ResNet-50 at 224 px).
    """
    a, p = _reverse_graph(model, x, sites, f)
    with torch.enable_grad():  # the per-class sums are graph nodes too, also under no_grad
        cols = [torch.autograd.grad(p[:, c].sum(), a, retain_graph=True)[0]
                for c in range(num_classes)]
    return torch.stack(cols, -1).detach()


def checked_input(model: nn.Module, x: torch.Tensor, who: str,
                  in_layout: str | Layout = "NCHW") -> torch.Tensor:
    """``x`` checked for a layer-wise measurement of ``model`` (and made contiguous)."""
    check_model(model, None, who)
    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        raise TypeError(f"{who}: torch.jit modules (scripted or traced) run no module hooks, so "
                        "they cannot be measured module by module; pass the eager nn.Module "
                        "they were made from (lielib.lee and lie_derivative accept them)")
    x = check_input(x, who)  # contiguous: in-place writes through an expanded x fail
    check_image(to_nchw(x, in_layout)[0], who)
    check_model(model, x, who)
    return x


def _check_count(value, name: str, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def layerwise_contributions(
    model: nn.Module,
    x: torch.Tensor,
    action: str | Action,
    *,
    method: str = "exact",
    num_probes: int = 100,
    modules: Sequence[str] | None = None,
    stencil: str = "central",
    seed: int | torch.Generator = 0,
    output: str = "softmax",
    in_layout: str | Layout = "NCHW",
    mode: str = "auto",
    modules_per_pass: int = 16,
    chunk_size: int | None = None,
) -> Decomposition:
    """Signed layer-wise contributions ``J_{>m} L m(x_m)`` along one action, and their squared norms.

    See :func:`layerwise_lee` for the arguments; ``mode`` picks the exact method's
    direction (``"forward"``, ``"reverse"`` or ``"auto"``: reverse when
    ``num_classes <= num_sites / 4``). ``chunk_size`` is the former name of
    ``modules_per_pass`` (deprecated).

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(2, 3))
    >>> dec = layerwise_contributions(net, torch.randn(1, 1, 8, 8), "rotate")
    >>> [s.name for s in dec.sites], dec.values.shape  # five modules and the residual
    (['0', '1', '2', '3', '4'], torch.Size([6, 1]))
    """
    if chunk_size is not None:
        warnings.warn("layerwise_contributions: chunk_size is now called modules_per_pass",
                      DeprecationWarning, stacklevel=2)
        modules_per_pass = chunk_size
    if method not in METHODS or mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"method must be one of {METHODS} (got {method!r}) and mode one of "
                         f"'auto', 'forward', 'reverse' (got {mode!r})")
    _check_count(num_probes, "num_probes")
    _check_count(modules_per_pass, "modules_per_pass")
    seed = check_seed(seed, "layerwise_lee")
    in_layout = Layout.parse(in_layout)
    x = checked_input(model, x, "layerwise_lee", in_layout)
    action = get_action(action)
    to_output = output_fn(output)

    def f(out: object) -> torch.Tensor:
        return to_output(tensor_output(out, "layerwise_lee"))

    units = select_modules(model, modules)
    if not units:
        raise ValueError("no modules to measure; pass modules= with names")
    with measuring(model), no_inplace(model):
        total = lie_derivative(lambda z: f(model(z)), x, action, stencil=stencil,
                               in_layout=in_layout)
        if total.ndim != 2:
            raise ValueError(f"need a classifier output (B, C), got {tuple(total.shape)}")
        sites = record_sites(model, x, units, in_layout=in_layout)
        _attach_lies(sites, action, stencil)
        num_classes = total.shape[-1]
        if method == "exact":
            if mode == "auto":
                mode = "reverse" if 4 * num_classes <= len(sites) else "forward"
            if mode == "forward":
                contrib = _exact_forward(model, x, sites, f, modules_per_pass)
            else:
                contrib = _exact_reverse(model, x, sites, f, num_classes)
            residual = total - contrib.sum(0)
            values = torch.cat([contrib.square().sum(-1), residual.square().sum(-1)[None]])
            return Decomposition(_strip(sites), values.detach(), contrib, residual, total, mode)
        a, p = _reverse_graph(model, x, sites, f)
        gen = seeded_generator(seed, "layerwise_lee", device=x.device)
        acc = torch.zeros(len(sites) + 1, x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(num_probes):
            z = torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device)
            g = torch.autograd.grad(p, a, z, retain_graph=True)[0].detach()
            r = (z * total).sum(-1) - g.sum(0)
            acc += torch.cat([g, r[None]]).square()
        return Decomposition(_strip(sites), acc / num_probes, None, None, total, "probes")


def _strip(sites: list[Site]) -> list[Site]:
    for s in sites:
        s.x = None
    return sites


def contributions_frame(
    sites: list[Site], values: torch.Tensor, residual_row: bool = True
) -> pd.DataFrame:
    """The tidy frame of per-site values ``(M + 1, B)``: one row per image and site.

    Columns ``image``, ``module``, ``module_type``, ``layer_kind``, ``order``, ``call``,
    ``downsampling``, ``value``; with ``residual_row`` the last row of ``values`` becomes a
    :data:`RESIDUAL` row per image.
    """
    vals = values.detach().double().cpu().numpy()
    rows = []
    for b in range(vals.shape[1]):
        for j, s in enumerate(sites):
            rows.append((b, s.name, s.module_type, s.layer_kind, s.order, s.call,
                         s.downsampling, vals[j, b]))
        if residual_row:
            rows.append((b, RESIDUAL, "", "residual", len(sites), 0, False, vals[-1, b]))
    return pd.DataFrame(rows, columns=["image", "module", "module_type", "layer_kind", "order",
                                       "call", "downsampling", "value"])


def layerwise_lee(
    model: nn.Module,
    x: torch.Tensor,
    actions: str | Action | Sequence[str | Action] | None = None,
    *,
    method: str = "exact",
    num_probes: int = 100,
    modules: Sequence[str] | None = None,
    stencil: str = "central",
    seed: int | torch.Generator = 0,
    output: str = "softmax",
    in_layout: str | Layout = "NCHW",
    modules_per_pass: int = 16,
) -> pd.DataFrame:
    """Each module's share of the Lie derivative: ``value = ||J_{>m} L m(x_m)||^2``.

    Args:
        model: a classifier ``(B, C, H, W) -> (B, num_classes)``; measured in eval mode,
            unchanged afterwards.
        x: input images in ``in_layout`` (``(B, C, H, W)`` by default).
        actions: one name or ``Action``, a sequence of them, or ``None`` for all
            registered actions (see :func:`lielib.list_actions`).
        method: ``"exact"`` (forward- or reverse-mode AD, zero variance) or ``"probes"``
            (the paper's Gaussian-probe estimator with ``num_probes`` backward passes,
            seeded by ``seed``: an int or a ``torch.Generator`` on ``x``'s device).
        modules: qualified module names to measure instead of the paper's selection
            (:func:`lielib.selection.select_modules`).
        stencil: the tangent stencil, ``"paper"`` or ``"central"``.
        output: ``"softmax"`` (the paper), ``"log_softmax"`` or ``"logits"``.
        modules_per_pass: modules whose contributions share one forward-mode pass.

    Returns:
        A tidy frame, one row per image, action and measured module call plus one
        ``residual`` row per image and action (what no module covers): columns
        ``image``, ``action``, ``module``, ``module_type``, ``layer_kind``, ``order``
        (execution order), ``call``, ``downsampling`` (output grid coarser than input),
        ``value``.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(2, 3))
    >>> frame = layerwise_lee(net, torch.randn(2, 1, 8, 8), ["rotate", "saturate"])
    >>> frame.groupby("action").size().to_dict()  # 2 images x (5 modules + residual)
    {'rotate': 12, 'saturate': 12}
    """
    frames = []
    for action in action_list(actions):
        dec = layerwise_contributions(
            model, x, action, method=method, num_probes=num_probes, modules=modules,
            stencil=stencil, seed=seed, output=output, in_layout=in_layout,
            modules_per_pass=modules_per_pass,
        )
        frame = contributions_frame(dec.sites, dec.values)
        frame.insert(1, "action", action.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
