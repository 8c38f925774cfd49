"""Lie derivatives of networks and the paper's LEE metric.

``L_G f(x) = d/dt rho_out(exp(-tG)) f(rho_in(exp(tG)) x)`` at ``t = 0``, computed by
forward-mode AD (``torch.func.jvp``): the tangent of the input is the action's tangent
image, and for image-like outputs the output's own tangent is subtracted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn
from torch.func import jvp, vmap

from .actions import Action, get_action, list_actions
from .layout import Layout
from .tangents import generator_coordinates, layout_tangent, layout_tangents, span_basis

__all__ = [
    "OUTPUTS",
    "REDUCTIONS",
    "flag_off",
    "fold_batchnorm",
    "lee",
    "lie_derivative",
    "lie_derivative_double_backward",
    "measuring",
    "output_fn",
    "reduce_classes",
]

OUTPUTS = ("softmax", "log_softmax", "logits")
REDUCTIONS = ("mean_abs", "mean_sq", "l2")
# Primal plus tangent images per forward-mode pass (see ``lee``): on a CPU where it runs
# fastest per image; elsewhere a bound on memory (ResNet-50 at 224 px: about 3 MB per
# image for its largest activation).
_CPU_IMAGES_PER_PASS = 12
_GPU_IMAGES_PER_PASS = 256


@contextlib.contextmanager
def flag_off(model: nn.Module, flag: str) -> Iterator[nn.Module]:
    """Set the boolean attribute ``flag`` of every module that has one to False; restore on exit.

    Used for ``fused_attn`` (timm attention) and ``inplace`` (activations).
    """
    saved = {m: getattr(m, flag) for m in model.modules() if isinstance(getattr(m, flag, None), bool)}
    try:
        for m in saved:
            setattr(m, flag, False)
        yield model
    finally:
        for m, value in saved.items():
            setattr(m, flag, value)


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with unfused attention; restore both on exit.

    Fused attention (``F.scaled_dot_product_attention``) supports neither forward mode
    nor double backward on the CPU. Modules that expose a ``fused_attn`` flag (timm's
    attention blocks) are switched to the explicit softmax path while measuring.
    """
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with flag_off(model, "fused_attn"):
            yield model
    finally:
        for m, flag in training.items():
            m.training = flag


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` with each BatchNorm folded into the conv before it.

    In eval mode ``BN(conv(x))`` is one affine convolution, so folding changes outputs
    only by float rounding (about 1e-7 relative in float32) while removing a third of
    the tangent work of a CNN. Traced with ``torch.fx``; returns ``model`` itself when
    it has no BatchNorm or cannot be traced. The original model is never modified.
    """
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model, inplace=False)
    except Exception:  # noqa: BLE001  (untraceable models run unfolded)
        return model


def _shared_derivatives(acts: Sequence[Action], tau: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Which actions need their own derivative, and every action in terms of those.

    A basis of the span of the generators (:func:`lielib.tangents.span_basis`); a
    dependent action is accepted only if its tangent image equals the same combination
    of the basis tangents up to float rounding, otherwise it gets its own derivative.

    Returns:
        ``independent`` action indices and ``coefficients`` ``(K, len(independent))``.
    """
    basis, coef = span_basis(generator_coordinates(acts))
    own = set(basis)
    scale = tau.abs().amax().item()
    for k in range(len(acts)):
        if k in own:
            continue
        combo = torch.einsum("r,r...->...", coef[k].to(tau), tau[basis])
        if not torch.allclose(combo, tau[k], rtol=1e-4, atol=1e-5 * scale):
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


def lie_derivative(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    action: str | Action,
    *,
    in_layout: str | Layout = "NCHW",
    out_layout: str | Layout | None = None,
    stencil: str = "paper",
) -> torch.Tensor:
    """The Lie derivative ``L f(x)`` along ``action``, by forward-mode AD.

    ``L f(x) = d/dt T_-t f(T_t x)`` at ``t = 0``: with ``out_layout=None`` the output is
    treated as invariant (``d/dt f(T_t x)``), otherwise it is image-like in that layout
    and transformed back. Prefix tokens of a token layout carry no position and are
    left unchanged by spatial actions.

    Args:
        f: a function of one tensor (a model, a layer, a composition).
        x: its input, laid out as ``in_layout``.
        action: an action name (see :func:`lielib.list_actions`) or an ``Action``.
        stencil: ``"paper"`` or ``"central"`` (see :mod:`lielib.sampling`).

    Returns:
        A tensor shaped like ``f(x)``.
    """
    action = get_action(action)
    in_layout = Layout.parse(in_layout)
    with torch.no_grad():
        v = layout_tangent(action, x, in_layout, stencil)
        y, dy = jvp(f, (x,), (v,))
        if out_layout is not None:
            dy = dy - layout_tangent(action, y, Layout.parse(out_layout), stencil)
    return dy


def lie_derivative_double_backward(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    action: str | Action,
    *,
    stencil: str = "paper",
) -> torch.Tensor:
    """``d/dt f(T_t x)`` at ``t = 0`` the way the paper's code computes it.

    Reverse mode twice: with ``y = f(T_t x)`` and a dummy cotangent ``u``,
    ``g(u) = u^T dy/dt`` is linear in ``u``, and ``dg/du = dy/dt``. Costs one forward,
    one backward and one double-backward pass; kept as a reference and as the baseline
    of ``python -m lielib.book.bench``. Input ``(B, C, H, W)``, invariant output.
    """
    action = get_action(action)
    with torch.enable_grad():
        t = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
        y = f(action.act(x, t, stencil=stencil))
        u = torch.zeros_like(y, requires_grad=True)
        (g,) = torch.autograd.grad(y, t, u, create_graph=True)
        (dy,) = torch.autograd.grad(g, u, torch.ones_like(g))
    return dy


def reduce_classes(d: torch.Tensor, reduce: str) -> torch.Tensor:
    """Collapse the last (class) axis: ``mean_abs``, ``mean_sq`` or ``l2``."""
    if reduce == "mean_abs":
        return d.abs().mean(-1)
    if reduce == "mean_sq":
        return d.square().mean(-1)
    if reduce == "l2":
        return torch.linalg.vector_norm(d, dim=-1)
    raise ValueError(f"unknown reduce {reduce!r}; use one of {REDUCTIONS}")


def output_fn(output: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The measured output ``p(z)`` of logits ``z``: ``softmax``, ``log_softmax`` or ``logits`` (``z``)."""
    if output == "softmax":
        return lambda z: z.softmax(-1)
    if output == "log_softmax":
        return lambda z: z.log_softmax(-1)
    if output == "logits":
        return lambda z: z
    raise ValueError(f"unknown output {output!r}; use one of {OUTPUTS}")


def lee(
    model: nn.Module,
    x: torch.Tensor,
    actions: Sequence[str | Action] | None = None,
    *,
    output: str = "softmax",
    reduce: str = "mean_abs",
    stencil: str = "paper",
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

    Args:
        model: any classifier ``(B, ...) -> (B, num_classes)``; measured in eval mode
            and restored afterwards.
        x: a batch of inputs in ``in_layout`` (``(B, C, H, W)`` by default).
        actions: names or ``Action`` objects; all registered actions when ``None``.
        images_per_pass: images per forward-mode pass. ``None``: on a CPU as many as
            keep about a dozen primal and tangent images per pass, where a CPU runs
            fastest per image (ResNet-50: 0.19 s per image at 12, 0.27 s at 24); on
            other devices up to 256 primal and tangent images, to bound memory.

    Returns:
        One row per image (index ``image``), one column per action.
    """
    names = list_actions() if actions is None else list(actions)
    if not names:
        raise ValueError("actions is empty; pass None for every registered action")
    acts = [get_action(a) for a in names]
    in_layout = Layout.parse(in_layout)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values; check the data pipeline")
    to_output = output_fn(output)
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; use one of {REDUCTIONS}")
    if images_per_pass is not None and images_per_pass < 1:
        raise ValueError("images_per_pass must be >= 1")

    with measuring(model), torch.no_grad():
        net = fold_batchnorm(model) if fold_bn else model

        def f(inp: torch.Tensor) -> torch.Tensor:
            return to_output(net(inp))

        tau = layout_tangents(acts, x, in_layout, stencil)  # (K, B, ...)
        independent, coefficients = _shared_derivatives(acts, tau) if share else (
            list(range(len(acts))), torch.eye(len(acts), dtype=torch.float64))
        tau = tau[independent]
        if images_per_pass is None:
            budget = _CPU_IMAGES_PER_PASS if x.device.type == "cpu" else _GPU_IMAGES_PER_PASS
            images_per_pass = max(1, budget // (1 + len(independent)))
        d_basis = torch.cat([
            vmap(lambda v, xi=xi: jvp(f, (xi,), (v,))[1], chunk_size=chunk_size)(ti)
            for xi, ti in zip(x.split(images_per_pass), tau.split(images_per_pass, dim=1))
        ], dim=1)
        d = torch.einsum("kr,r...->k...", coefficients.to(d_basis), d_basis)
    if d.ndim != 3:
        raise ValueError(
            f"lee needs a classifier output (B, num_classes), got shape {tuple(d.shape[1:])}; "
            "use lie_derivative with out_layout for image-like outputs"
        )
    values = reduce_classes(d, reduce)  # (K, B)
    if not torch.isfinite(values).all():
        raise FloatingPointError(
            "the Lie derivative is not finite; the model produced NaN/inf outputs or derivatives"
        )
    columns = [a.name for a in acts]
    frame = pd.DataFrame(values.T.double().cpu().numpy(), columns=columns)
    frame.index.name = "image"
    return frame
