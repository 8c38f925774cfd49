"""Lie derivatives of networks and the paper's LEE metric.

``L_G f(x) = d/dt rho_out(exp(-tG)) f(rho_in(exp(tG)) x)`` at ``t = 0``, computed by
forward-mode AD (``torch.func.jvp``): the tangent of the input is the action's tangent
image, and for image-like outputs the output's own tangent is subtracted.

Every entry point measures a model (an ``nn.Module``; ``lie_derivative`` also takes any
function of one tensor) inside
:func:`lielib.prepare.measuring` (eval mode, unfused attention, both restored on exit);
``measuring``, ``flag_off`` and ``fold_batchnorm`` are re-exported here.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn
from torch.func import jvp, vmap

from .actions import Action, get_action, list_actions
from .layout import Layout
from .prepare import (
    check_input,
    flag_off,
    fold_batchnorm,
    measuring,
    measuring_if_module,
    tensor_output,
)
from .tangents import generator_coordinates, layout_tangent, layout_tangents, span_basis

__all__ = [
    "OUTPUTS",
    "REDUCTIONS",
    "action_list",
    "batched_jvp",
    "check_images_per_pass",
    "combine",
    "flag_off",
    "fold_batchnorm",
    "lee",
    "lie_derivative",
    "lie_derivative_double_backward",
    "measuring",
    "output_fn",
    "reduce_classes",
    "shared_derivatives",
]

OUTPUTS = ("softmax", "log_softmax", "logits")
REDUCTIONS = ("mean_abs", "mean_sq", "l2")
# Primal plus tangent images per forward-mode pass (see ``lee``): on a CPU where it runs
# fastest per image; elsewhere a bound on memory (ResNet-50 at 224 px: about 3 MB per
# image for its largest activation).
_CPU_IMAGES_PER_PASS = 12
_GPU_IMAGES_PER_PASS = 256


def action_list(actions: str | Action | Sequence[str | Action] | None) -> list[Action]:
    """Actions from ``None`` (all registered), one name or ``Action``, or a sequence of them.

    >>> [a.name for a in action_list(["rotate", "saturate"])]
    ['rotate', 'saturate']
    """
    if actions is None:
        names: list = list_actions()
    elif isinstance(actions, (str, Action)):
        names = [actions]
    else:
        names = list(actions)
    if not names:
        raise ValueError("actions is empty; pass None for every registered action")
    acts = [get_action(a) for a in names]
    seen = [a.name for a in acts]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ValueError(f"actions lists {', '.join(map(repr, twice))} more than once; each "
                         "action is measured once (one column or row each)")
    return acts


def shared_derivatives(acts: Sequence[Action], tau: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Which actions need their own derivative, and every action in terms of those.

    A basis of the span of the generators (:func:`lielib.tangents.span_basis`); a
    dependent action is accepted only if its tangent image ``tau`` ``(K, B, ...)`` equals
    the same combination of the basis tangents up to float rounding of its dtype,
    otherwise it gets its own derivative.

    Returns:
        ``independent`` action indices and ``coefficients`` ``(K, len(independent))``.
    """
    basis, coef = span_basis(generator_coordinates(acts))
    own = set(basis)
    t32 = tau.to(torch.promote_types(tau.dtype, torch.float32))
    scale = t32.abs().amax().item()
    rtol = max(1e-4, 8 * torch.finfo(tau.dtype).eps)
    for k in range(len(acts)):
        if k in own:
            continue
        combo = torch.einsum("r,r...->...", coef[k].to(t32), t32[basis])
        if not torch.allclose(combo, t32[k], rtol=rtol, atol=rtol * 0.1 * scale):
            own.add(k)
    independent = sorted(own)
    out = torch.zeros(len(acts), len(independent), dtype=torch.float64)
    for k in range(len(acts)):
        if k in own:
            out[k, independent.index(k)] = 1.0
        else:
            for r, b in enumerate(basis):
                out[k, independent.index(b)] = coef[k, r]
    return independent, out


def batched_jvp(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    directions: torch.Tensor,
    *,
    images_per_pass: int | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``J_f(x_b) v_{d,b}`` for directions ``(D, B, ...)``: ``(D, B, ...)`` shaped like ``f``'s output.

    Images go in passes of ``images_per_pass``; within a pass one primal evaluation is
    shared by all ``D`` directions, which are ``vmap``-ed through one ``jvp``.
    """
    if images_per_pass is None:
        budget = _CPU_IMAGES_PER_PASS if x.device.type == "cpu" else _GPU_IMAGES_PER_PASS
        images_per_pass = max(1, budget // (1 + directions.shape[0]))
    return torch.cat([
        vmap(lambda v, xi=xi: jvp(f, (xi,), (v,))[1], chunk_size=chunk_size)(vi)
        for xi, vi in zip(x.split(images_per_pass), directions.split(images_per_pass, dim=1))
    ], dim=1)


def lie_derivative(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    action: str | Action,
    *,
    in_layout: str | Layout = "NCHW",
    out_layout: str | Layout | None = None,
    stencil: str = "central",
) -> torch.Tensor:
    """The Lie derivative ``L f(x)`` along ``action``, by forward-mode AD.

    ``L f(x) = d/dt T_-t f(T_t x)`` at ``t = 0``: with ``out_layout=None`` the output is
    treated as invariant (``d/dt f(T_t x)``), otherwise it is image-like in that layout
    and transformed back. Prefix tokens of a token layout carry no position and are
    left unchanged by spatial actions.

    Args:
        model: a module or any function of one tensor (a layer, a composition). An
            ``nn.Module`` is measured in eval mode with unfused attention and restored
            afterwards; wrap a function of a model in ``with measuring(model):`` for the
            same.
        x: its input, laid out as ``in_layout``.
        action: an action name (see :func:`lielib.list_actions`) or an ``Action``.
        stencil: ``"paper"`` or ``"central"`` (see :mod:`lielib.sampling`).

    Returns:
        A tensor shaped like ``model(x)``.

    >>> pointwise = nn.Conv2d(1, 2, 1)  # commutes with every resampling
    >>> x = torch.randn(1, 1, 8, 8)
    >>> bool(lie_derivative(pointwise, x, "rotate", out_layout="NCHW").abs().max() < 1e-5)
    True
    >>> lie_derivative(lambda z: z.mean((-2, -1)), x, "rotate").shape  # invariant output
    torch.Size([1, 1])
    """
    action = get_action(action)
    in_layout = Layout.parse(in_layout)
    x = check_input(x, "lie_derivative")
    with measuring_if_module(model), torch.no_grad():
        v = layout_tangent(action, x, in_layout, stencil)
        y, dy = jvp(lambda z: tensor_output(model(z), "lie_derivative"), (x,), (v,))
        if out_layout is not None:
            dy = dy - layout_tangent(action, y, Layout.parse(out_layout), stencil)
    return dy


def lie_derivative_double_backward(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    action: str | Action,
    *,
    stencil: str = "central",
) -> torch.Tensor:
    """``d/dt f(T_t x)`` at ``t = 0`` the way the paper's code computes it.

    Reverse mode twice: with ``y = f(T_t x)`` and a dummy cotangent ``u``,
    ``g(u) = u^T dy/dt`` is linear in ``u``, and ``dg/du = dy/dt``. Costs one forward,
    one backward and one double-backward pass; kept as a reference and as the baseline
    of ``python -m lielib.book.bench``. Input ``(B, C, H, W)``, invariant output; an
    ``nn.Module`` is measured as in :func:`lie_derivative`.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3)).double()
    >>> x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    >>> torch.allclose(lie_derivative_double_backward(net, x, "rotate"),
    ...                lie_derivative(net, x, "rotate"))
    True
    """
    action = get_action(action)
    x = check_input(x, "lie_derivative_double_backward")
    with measuring_if_module(model), torch.enable_grad():
        t = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
        y = tensor_output(model(action.act(x, t, stencil=stencil)),
                          "lie_derivative_double_backward")
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, t, u, create_graph=True)
        (dy,) = torch.autograd.grad(g, u, torch.ones_like(g))
    return dy


def reduce_classes(d: torch.Tensor, reduce: str) -> torch.Tensor:
    """Collapse the last (class) axis: ``mean_abs``, ``mean_sq`` or ``l2``.

    >>> reduce_classes(torch.tensor([[3.0, -4.0]]), "l2")
    tensor([5.])
    """
    if reduce == "mean_abs":
        return d.abs().mean(-1)
    if reduce == "mean_sq":
        return d.square().mean(-1)
    if reduce == "l2":
        return torch.linalg.vector_norm(d, dim=-1)
    raise ValueError(f"unknown reduce {reduce!r}; use one of {REDUCTIONS}")


def output_fn(output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The measured output ``p(z)`` of logits ``z``: ``softmax``, ``log_softmax`` or ``logits`` (``z``).

    >>> output_fn("softmax")(torch.zeros(1, 4))
    tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    if output == "softmax":
        return lambda z: z.softmax(-1)
    if output == "log_softmax":
        return lambda z: z.log_softmax(-1)
    if output == "logits":
        return lambda z: z
    raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")


def check_images_per_pass(images_per_pass: object) -> None:
    """Raise unless ``images_per_pass`` is None or a positive int."""
    if images_per_pass is None:
        return
    if isinstance(images_per_pass, bool) or not isinstance(images_per_pass, numbers.Integral):
        raise TypeError(f"images_per_pass must be a positive int or None, got {images_per_pass!r}")
    if images_per_pass < 1:
        raise ValueError("images_per_pass must be >= 1")


def lee(
    model: nn.Module,
    x: torch.Tensor,
    actions: str | Action | Sequence[str | Action] | None = None,
    *,
    output: str = "softmax",
    reduce: str = "mean_abs",
    stencil: str = "central",
    in_layout: str | Layout = "NCHW",
    chunk_size: int | None = None,
    images_per_pass: int | None = None,
    fold_bn: bool = True,
    share: bool = True,
) -> pd.DataFrame:
    """Local equivariance error: the size of ``L p(x)`` per image and action.

    ``LEE_G(x) = reduce_c |L_G p_c(x)|`` with ``p = softmax(model(x))``. ``mean_abs``
    averages ``|L p_c|`` over classes (the paper's code), ``mean_sq`` averages its
    square (the paper's Eq. 4), ``l2`` is the Euclidean norm.

    All actions share one primal pass: their tangents are ``vmap``-ed through one
    ``jvp`` (``chunk_size`` bounds how many at once).

    With ``share`` (the default) only a basis of the span of the requested generators
    is differentiated, and the other Lie derivatives are its linear combinations,
    ``L_{aG + bH} p = a L_G p + b L_H p`` (exact: the tangent images themselves are
    checked to combine the same way); the paper's six quantities need five derivatives,
    all ten actions seven.

    With ``fold_bn`` (the default) the pass runs on a copy of the model whose eval-mode
    BatchNorms are folded into the preceding convolutions (:func:`fold_batchnorm`):
    identical up to float rounding, and about 1.3x faster for ResNet-50.

    Half-precision models (``float16``, ``bfloat16``) are measured in their dtype, with
    tangent images computed in float32 and rounded to it.

    Args:
        model: any classifier ``(B, ...) -> (B, num_classes)`` returning a tensor;
            measured in eval mode with unfused attention and restored afterwards.
        x: a batch of inputs in ``in_layout`` (``(B, C, H, W)`` by default).
        actions: one name or ``Action``, a sequence of them, or ``None`` for all
            registered actions.
        images_per_pass: images per forward-mode pass. ``None``: on a CPU as many as
            keep about a dozen primal and tangent images per pass, where a CPU runs
            fastest per image (ResNet-50: 0.19 s per image at 12, 0.27 s at 24); on
            other devices up to 256 primal and tangent images, to bound memory.

    Returns:
        One row per image (index ``image``), one column per action.

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(144, 5))
    >>> frame = lee(net, torch.randn(2, 3, 8, 8), ["translate_x", "rotate"])
    >>> frame.index.name, list(frame.columns)
    ('image', ['translate_x', 'rotate'])
    """
    acts = action_list(actions)
    in_layout = Layout.parse(in_layout)
    x = check_input(x, "lee")
    to_output = output_fn(output)
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; use one of {REDUCTIONS}")
    check_images_per_pass(images_per_pass)

    with measuring(model), torch.no_grad():
        net = fold_batchnorm(model) if fold_bn else model

        def f(inp: torch.Tensor) -> torch.Tensor:
            return to_output(tensor_output(net(inp), "lee"))

        tau = layout_tangents(acts, x, in_layout, stencil)  # (K, B, ...)
        independent, coefficients = shared_derivatives(acts, tau) if share else (
            list(range(len(acts))), torch.eye(len(acts), dtype=torch.float64))
        d_basis = batched_jvp(f, x, tau[independent], images_per_pass=images_per_pass,
                              chunk_size=chunk_size)
        d = combine(coefficients, d_basis)
    values = reduce_classes(d, reduce)  # (K, B)
    columns = [a.name for a in acts]
    frame = pd.DataFrame(values.T.double().cpu().numpy(), columns=columns)
    frame.index.name = "image"
    return frame


def combine(coefficients: torch.Tensor, d_basis: torch.Tensor) -> torch.Tensor:
    """Every action's derivative ``(K, B, num_classes)`` from the basis derivatives; checked.

    Computed in at least float32 (half-precision derivatives are promoted).
    """
    if d_basis.ndim != 3:
        raise ValueError(
            f"lee needs a classifier output (B, num_classes), got shape {tuple(d_basis.shape[2:])}; "
            "use lie_derivative with out_layout for image-like outputs"
        )
    d_basis = d_basis.to(torch.promote_types(d_basis.dtype, torch.float32))
    if not torch.isfinite(d_basis).all():
        raise FloatingPointError(
            "the Lie derivative is not finite; the model produced NaN/inf outputs or derivatives"
        )
    return torch.einsum("kr,r...->k...", coefficients.to(d_basis), d_basis)
