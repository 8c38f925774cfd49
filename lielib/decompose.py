"""Layer-wise decomposition of the Lie derivative.

By the chain rule the Lie derivative of a network splits over its modules,
``L f(x) = sum_m J_{>m} L m(x_m) + r``, where ``L m(x_m) = J_m tau_in(x_m) - tau_out(y_m)``
is module ``m``'s own Lie derivative (its input transformed, its output transformed back,
each tensor with its own layout, see :mod:`lielib.module_layouts`), ``J_{>m}`` is the
Jacobian of the rest of the network (softmax included) at the module's output, and ``r``
collects what no hooked module covers (functional operations such as adding a
positional embedding). A module's contribution is ``value = ||J_{>m} L m||^2``, the sum of
squares over classes of its signed contribution.

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
live in a context manager that removes them even on error, and the model is measured
in eval mode (:func:`lielib.lie.measuring`).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from torch.func import jvp, vmap

from .actions import Action, AffineAction, get_action
from .layout import Layout, from_nchw, to_nchw
from .lie import _output_fn, _tangent, flag_off, lie_derivative, measuring
from .module_layouts import (
    EXCLUDED_CLASS_NAMES,
    KIND_BY_CLASS_NAME,
    UNIT_CLASS_NAMES,
    ModelLayouts,
)

__all__ = [
    "LAYER_KINDS",
    "METHODS",
    "Decomposition",
    "Site",
    "layer_kind",
    "layerwise_contributions",
    "layerwise_lee",
    "layerwise_shift_error",
    "module_hooks",
    "no_inplace",
    "select_modules",
]

METHODS = ("exact", "probes")
LAYER_KINDS = (
    "activation", "conv", "linear", "attention", "mlp", "block", "norm", "pool", "embed",
    "other", "residual",
)
RESIDUAL = "(residual)"
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_POOLS = (
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)


def _class_names(m: nn.Module) -> list[str]:
    return [c.__name__ for c in type(m).__mro__]


def layer_kind(module: nn.Module) -> str:
    """The kind of a module: one of :data:`LAYER_KINDS` (``residual`` excepted)."""
    for name in _class_names(module):
        if name in KIND_BY_CLASS_NAME:
            return KIND_BY_CLASS_NAME[name]
        if name == "Module":
            break
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, _POOLS):
        return "pool"
    if type(module).__module__ == "torch.nn.modules.activation" or isinstance(
        module, nn.Softmax
    ):
        return "activation"
    return "other"


def _excluded(m: nn.Module) -> bool:
    return isinstance(m, (nn.Identity, nn.modules.dropout._DropoutNd)) or bool(
        set(_class_names(m)) & EXCLUDED_CLASS_NAMES
    )


def _is_unit(m: nn.Module) -> bool:
    return isinstance(m, _NORMS) or bool(set(_class_names(m)) & UNIT_CLASS_NAMES)


def _split_child(m: nn.Module) -> str | None:
    """timm's ``*NormAct*`` layers end in an ``act`` child measured on its own."""
    act = getattr(m, "act", None)
    if any("NormAct" in n for n in _class_names(m)) and isinstance(act, nn.Module):
        return None if _excluded(act) else "act"
    return None


def select_modules(
    model: nn.Module, modules: Sequence[str] | None = None
) -> list[tuple[str, str | None]]:
    """The measured units as ``(name, split_child)`` pairs in ``named_modules`` order.

    The paper's selection: leaf modules, plus composite modules measured as one unit
    (norms, attention, MLP blocks, Mixer blocks, patch embeddings, squeeze-excite,
    global pooling; see :data:`lielib.module_layouts.UNIT_CLASS_NAMES`) whose children
    are not hooked. Identity-like modules (dropout, drop-path, ``nn.Identity``) are
    skipped: their Lie derivative is zero. A timm norm-activation layer is split: its
    ``act`` child is a unit of its own and the norm's row holds the rest (``split_child``
    names the child whose share is subtracted).

    Args:
        modules: explicit qualified names (as in ``model.named_modules()``) to measure
            instead; none may contain another.
    """
    named = dict(model.named_modules())
    if modules is not None:
        names = list(modules)
        missing = [n for n in names if n not in named]
        if missing:
            raise ValueError(
                f"modules not in the model: {missing}; use names from model.named_modules()"
            )
        if len(set(names)) != len(names):
            raise ValueError("modules= lists a name twice")
        for a, b in itertools.permutations(names, 2):
            if b.startswith(a + ".") or a == "":
                raise ValueError(
                    f"modules= lists {a!r} and its descendant {b!r}: contributions would be "
                    "counted twice; choose one"
                )
        return [(n, None) for n in names]
    out: list[tuple[str, str | None]] = []

    def visit(prefix: str, m: nn.Module) -> None:
        if _excluded(m):
            return
        children = list(m.named_children())
        if not children or _is_unit(m):
            child = _split_child(m)
            out.append((prefix, child))
            if child is not None:
                out.append((f"{prefix}.{child}" if prefix else child, None))
            return
        for cname, c in children:
            visit(f"{prefix}.{cname}" if prefix else cname, c)

    visit("", model)
    return out


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


def _spatial_hw(t: torch.Tensor, layout: Layout | None) -> tuple[int, int] | None:
    if layout is None:
        return None
    return tuple(to_nchw(t, layout)[0].shape[-2:])


def _record(
    model: nn.Module, x: torch.Tensor, units: list[tuple[str, str | None]]
) -> list[Site]:
    """One forward pass that records each unit's input (cloned) and resolves layouts."""
    named = dict(model.named_modules())
    layouts = ModelLayouts(model, x.shape)
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
        hw_in, hw_out = _spatial_hw(rec["x"], lin), _spatial_hw(rec["y"], lout)
        down = hw_in is not None and (hw_out is None or hw_out[0] * hw_out[1] < hw_in[0] * hw_in[1])
        sites.append(Site(rec["name"], type(m).__name__, layer_kind(m), rec["call"], k, down,
                          lin, lout, split[rec["name"]], m, rec["x"]))
    return sites


_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _stencil_operator(action: Action, h: int, w: int, stencil: str, dtype, device):
    """The tangent of an affine action at ``t = 0`` as a 3x3 stencil with per-pixel weights.

    ``tau(x)[p] = sum_o B_o(p) x[p + o]`` over offsets ``o`` in ``{-1, 0, 1}^2`` (zero
    outside the image; reflection is folded into the weights). The weights are read off
    ``action.tangent`` applied to nine images that colour pixels by ``(row % 3, col % 3)``:
    inside any 3x3 window each colour occurs once. The operator is checked against
    ``action.tangent`` on a random image; ``None`` when they disagree (a wider stencil).
    """
    rows = torch.arange(h, device=device)[:, None] % 3
    cols = torch.arange(w, device=device)[None, :] % 3
    probes = torch.stack([((rows == a) & (cols == b)).double() for a in range(3) for b in range(3)])
    resp = action.tangent(probes[None], stencil=stencil)[0]  # (9, H, W), one image of 9 channels
    ops = []
    for dy, dx in _OFFSETS:
        r = torch.arange(h, device=device)[:, None] + dy
        c = torch.arange(w, device=device)[None, :] + dx
        valid = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        colour = ((r % 3) * 3 + (c % 3)).expand(h, w)
        weight = torch.gather(resp, 0, colour[None]).squeeze(0) * valid
        if weight.abs().max() > 0:
            ops.append((dy, dx, weight))
    test = torch.randn(1, 1, h, w, dtype=torch.float64, device=device,
                       generator=torch.Generator(device=device).manual_seed(0))
    ref = action.tangent(test, stencil=stencil)
    got = _apply_stencil(ops, test)
    if not torch.allclose(got, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()) + 1e-12):
        return None
    return [(dy, dx, wt.to(dtype)) for dy, dx, wt in ops]


def _apply_stencil(ops, img: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    pad = torch.nn.functional.pad(img, (1, 1, 1, 1))
    out = None
    for dy, dx, wt in ops:
        shifted = pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        out = shifted * wt if out is None else out.addcmul_(shifted, wt)
    return torch.zeros_like(img) if out is None else out


class _Tangents:
    """``tau(t)`` for tensors of any layout, with affine tangents as cached stencils."""

    def __init__(self, action: Action, stencil: str):
        self.action, self.stencil = action, stencil
        self.cache: dict = {}

    def __call__(self, t: torch.Tensor, layout: Layout) -> torch.Tensor:
        if not isinstance(self.action, AffineAction):
            return _tangent(self.action, t, layout, self.stencil)
        img, prefix = to_nchw(t, layout)
        key = (tuple(img.shape[-2:]), img.dtype, img.device)
        if key not in self.cache:
            self.cache[key] = _stencil_operator(self.action, *key[0], self.stencil, img.dtype,
                                                img.device)
        ops = self.cache[key]
        if ops is None:
            return _tangent(self.action, t, layout, self.stencil)
        v = _apply_stencil(ops, img)
        return from_nchw(v, None if prefix is None else torch.zeros_like(prefix), layout)


def _module_lie(site: Site, tangent: _Tangents) -> torch.Tensor:
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
    tangent = _Tangents(action, stencil)
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
    msg = str(err).lower()
    return "vmap" in msg and ("inplace" in msg or "in-place" in msg)


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
    cols = [torch.autograd.grad(p[:, c].sum(), a, retain_graph=True)[0]
            for c in range(num_classes)]
    return torch.stack(cols, -1).detach()


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise ValueError("x must be a floating-point image batch (B, C, H, W)")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values; check the data pipeline")


def layerwise_contributions(
    model: nn.Module,
    x: torch.Tensor,
    action: str | Action,
    *,
    method: str = "exact",
    num_probes: int = 100,
    modules: Sequence[str] | None = None,
    stencil: str = "paper",
    seed: int = 0,
    output: str = "softmax",
    mode: str = "auto",
    chunk_size: int = 16,
) -> Decomposition:
    """Signed layer-wise contributions ``J_{>m} L m(x_m)`` and their squared norms.

    See :func:`layerwise_lee` for the arguments; ``mode`` picks the exact method's
    direction (``"forward"``, ``"reverse"`` or ``"auto"``: reverse when
    ``num_classes <= num_sites / 4``), ``chunk_size`` how many sites share one forward
    pass.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError("mode must be 'auto', 'forward' or 'reverse'")
    if method == "probes" and num_probes < 1:
        raise ValueError("num_probes must be >= 1")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    _check_input(x)
    action = get_action(action)
    f = _output_fn(output)
    units = select_modules(model, modules)
    if not units:
        raise ValueError("no modules to measure; pass modules= with names")
    with measuring(model), no_inplace(model):
        total = lie_derivative(lambda z: f(model(z)), x, action, stencil=stencil)
        if total.ndim != 2:
            raise ValueError(f"need a classifier output (B, C), got {tuple(total.shape)}")
        sites = _record(model, x, units)
        _attach_lies(sites, action, stencil)
        num_classes = total.shape[-1]
        if method == "exact":
            if mode == "auto":
                mode = "reverse" if 4 * num_classes <= len(sites) else "forward"
            if mode == "forward":
                contrib = _exact_forward(model, x, sites, f, chunk_size)
            else:
                contrib = _exact_reverse(model, x, sites, f, num_classes)
            residual = total - contrib.sum(0)
            values = torch.cat([contrib.square().sum(-1), residual.square().sum(-1)[None]])
            return Decomposition(_strip(sites), values.detach(), contrib, residual, total, mode)
        a, p = _reverse_graph(model, x, sites, f)
        gen = torch.Generator(device=x.device).manual_seed(seed)
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


def _frame(sites: list[Site], values: torch.Tensor, residual_row: bool = True) -> pd.DataFrame:
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
    action: str | Action,
    *,
    method: str = "exact",
    num_probes: int = 100,
    modules: Sequence[str] | None = None,
    stencil: str = "paper",
    seed: int = 0,
    output: str = "softmax",
    chunk_size: int = 16,
) -> pd.DataFrame:
    """Each module's share of the Lie derivative: ``value = ||J_{>m} L m(x_m)||^2``.

    Args:
        model: a classifier ``(B, C, H, W) -> (B, num_classes)``; measured in eval mode,
            unchanged afterwards.
        x: input images ``(B, C, H, W)``.
        action: an action name (see :func:`lielib.list_actions`) or an ``Action``.
        method: ``"exact"`` (forward- or reverse-mode AD, zero variance) or ``"probes"``
            (the paper's Gaussian-probe estimator with ``num_probes`` backward passes,
            seeded by ``seed``).
        modules: qualified module names to measure instead of the paper's selection
            (:func:`select_modules`).
        stencil: the tangent stencil, ``"paper"`` or ``"central"``.
        output: ``"softmax"`` (the paper), ``"log_softmax"`` or ``"logits"``.

    Returns:
        A tidy frame, one row per image and measured module call plus one ``residual``
        row per image (what no module covers): columns ``image``, ``module``,
        ``module_type``, ``layer_kind``, ``order`` (execution order), ``call``,
        ``downsampling`` (output grid coarser than input), ``value``.
    """
    dec = layerwise_contributions(
        model, x, action, method=method, num_probes=num_probes, modules=modules,
        stencil=stencil, seed=seed, output=output, chunk_size=chunk_size,
    )
    return _frame(dec.sites, dec.values)


def _roll(t: torch.Tensor, layout: Layout, s: int, dim: int) -> torch.Tensor:
    img, prefix = to_nchw(t, layout)
    return from_nchw(torch.roll(img, s, dims=dim), prefix, layout)


def layerwise_shift_error(
    model: nn.Module, x: torch.Tensor, *, modules: Sequence[str] | None = None
) -> pd.DataFrame:
    """Each module's error under integer circular shifts, an alias-blind baseline.

    ``err_m = mean_d ||m(S_d^s x_m) - S_d^1 m(x_m)||^2 / ||m(x_m)||^2`` over the two axes
    ``d``, where ``S_d^k`` rolls the grid by ``k`` pixels and ``s = H_in / H_out`` is the
    module's stride, so the output moves by exactly one pixel (an invariant output is
    compared unshifted, with ``s = 1``). Shifts by whole multiples of the stride never
    see aliasing, which is why this metric misses what the Lie derivative measures.
    Modules without a spatial input get ``NaN``. Same selection, layouts and columns as
    :func:`layerwise_lee` (without a residual row).
    """
    _check_input(x)
    units = select_modules(model, modules)
    named = dict(model.named_modules())
    with measuring(model), no_inplace(model), torch.no_grad():
        sites = _record(model, x, units)
        vals = torch.full((len(sites) + 1, x.shape[0]), float("nan"), dtype=torch.float64)
        for j, s in enumerate(sites):
            if s.in_layout is None:
                continue
            bypass = []
            if s.split_child is not None:
                child = named[f"{s.name}.{s.split_child}" if s.name else s.split_child]
                bypass = [(child, "forward", lambda m, a, o: a[0])]
            with module_hooks(bypass):
                vals[j] = _shift_error(s, s.module, s.x)
    _strip(sites)
    return _frame(sites, vals, residual_row=False)


def _shift_error(s: Site, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = m(x)
    hin = to_nchw(x, s.in_layout)[0].shape[-2:]
    hout = None if s.out_layout is None else to_nchw(y, s.out_layout)[0].shape[-2:]
    errs = []
    for axis, dim in ((0, -2), (1, -1)):
        if hout is None:
            step, out_step = 1, 0
        elif hin[axis] % hout[axis] == 0:
            step, out_step = hin[axis] // hout[axis], 1
        else:
            return torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
        ys = m(_roll(x, s.in_layout, step, dim))
        target = y if hout is None else _roll(y, s.out_layout, out_step, dim)
        num = (ys - target).flatten(1).square().sum(1)
        den = y.flatten(1).square().sum(1).clamp_min(torch.finfo(y.dtype).tiny)
        errs.append((num / den).double())
    return torch.stack(errs).mean(0).cpu()
