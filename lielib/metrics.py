"""Sample-based equivariance metrics that the paper compares the Lie derivative against.

Each metric transforms a batch with finitely many sampled transforms, runs the model on
each transformed batch and reports one row per image (column ``image``):

* :func:`shift_consistency`: integer circular shifts, ``P[argmax f(roll_s x) = argmax f(x)]``
  (Zhang 2019).
* :func:`eq_t`, :func:`eq_t_frac`, :func:`eq_r`: StyleGAN3's EQ-T, EQ-T_frac and EQ-R
  (Karras et al. 2021) adapted to classifiers,
  ``PSNR = 10 log10(1 / mean_{s,c} (p_c(T_s x) - p_c(x))^2)`` in dB.
* :func:`sampled_invariance`: finite differences of a lielib action,
  ``mean_s mean_c |p_c(T_t x) - p_c(x)| / |t|``, the finite-t analogue of LEE.

Shared convention:
    * ``x`` is ``(B, C, H, W)``, floating point, finite; the model maps it to
      ``(B, num_classes)`` logits (any number of classes, any device). Non-finite
      outputs raise ``FloatingPointError``, as in :func:`lielib.lee`: a NaN would
      otherwise read as perfect invariance (``+inf`` dB, full consistency).
    * The model runs in :func:`lielib.lie.measuring` (eval mode, restored) under
      ``torch.no_grad()``.
    * ``seed`` is an int or a ``torch.Generator``: random transforms are drawn from
      ``torch.Generator().manual_seed(seed)`` on the CPU (so an int gives the same
      transforms on every device), or from the caller's generator; each draw is shared
      by the whole batch, so an image's value does not depend on its neighbours.
    * Pixel shifts follow ``torch.roll``: a positive shift moves the content towards
      larger column (``x``, width) or row (``y``, height) indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from .actions import Action, check_model, get_action
from .fourier import fourier_rotate, fourier_shift
from .lie import measuring, output_fn
from .prepare import check_seed, seeded_generator

__all__ = [
    "eq_r",
    "eq_t",
    "eq_t_frac",
    "integer_translate",
    "psnr_db",
    "sampled_invariance",
    "shift_consistency",
]

_AXIS_DIM = {"x": -1, "y": -2}


def _check_input(model: nn.Module, x: torch.Tensor, seed: int | torch.Generator = 0) -> None:
    check_seed(seed, "metrics")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or min(x.shape) == 0:
        raise ValueError(
            f"x must be a non-empty image batch (B, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch axis with x[None] or convert layouts with lielib.layout.to_nchw"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got {x.dtype}; convert with x.float()")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values; check the data pipeline")
    check_model(model, x, "metrics")


def _check_count(n: int, name: str = "n") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _check_bound(value: float, name: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits (B, num_classes), got {shape}")
    if not torch.isfinite(out).all():
        raise FloatingPointError(
            "the model's output holds NaN or infinite values, so no metric can be computed; "
            "check the model on this input (e.g. torch.isfinite(model(x)).all())"
        )
    return out


def _frame(columns: dict[str, torch.Tensor]) -> pd.DataFrame:
    first = next(iter(columns.values()))
    data = {"image": range(first.shape[0])}
    data.update({k: v.detach().double().cpu().numpy() for k, v in columns.items()})
    return pd.DataFrame(data)


def psnr_db(mse: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """``10 log10(peak^2 / mse)`` in dB, ``+inf`` where ``mse == 0`` (exact invariance).

    >>> psnr_db(torch.tensor([0.01, 0.0])).tolist()
    [20.0, inf]
    """
    safe = torch.where(mse > 0, mse, torch.ones_like(mse))
    value = 10.0 * torch.log10(peak**2 / safe)
    return torch.where(mse > 0, value, torch.full_like(mse, math.inf))


# --- transforms -------------------------------------------------------------------------


def integer_translate(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Shift ``(B, C, H, W)`` by whole pixels with zero fill (StyleGAN3's integer translation).

    ``y[..., i, j] = x[..., i - dy, j - dx]`` where that index exists, else ``0``.

    >>> integer_translate(torch.arange(1.0, 5.0).reshape(1, 4), 1, 0)
    tensor([[0., 1., 2., 3.]])
    """
    if any(isinstance(d, bool) or not isinstance(d, int) for d in (dx, dy)):
        raise TypeError(f"integer_translate shifts by whole pixels: dx and dy must be integers, "
                        f"got {dx!r}, {dy!r}; use lielib.fourier.fourier_shift for fractions")
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("integer_translate needs a tensor (..., H, W)")
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


# --- metrics ----------------------------------------------------------------------------


def shift_consistency(
    model: nn.Module,
    x: torch.Tensor,
    *,
    max_shift: int = 7,
    axes: Sequence[str] = ("x", "y"),
    include_zero: bool = True,
) -> pd.DataFrame:
    """Integer circular-shift prediction consistency (Zhang 2019), per image.

    ``consistency = mean_{a, s} [argmax f(roll_{a,s} x) == argmax f(x)]``.

    Convention:
        Shifts ``s = 0, 1, ..., max_shift`` pixels along each axis separately with
        ``torch.roll`` (circular, no fill): ``x`` is the width (last dim), ``y`` the
        height. Shift 0 is counted, as in the paper's code (its columns
        ``consistency_x0..7``); pass ``include_zero=False`` to average over the
        non-trivial shifts only. The paper's code rolls dim 2 for its "x"; the pair of
        axes is the same. Zhang (2019) instead compares two random shifts of a crop;
        this is the fixed-shift variant that the Lie derivative paper reports.

    Returns:
        Columns ``image``, ``consistency`` (all axes) and ``consistency_<axis>`` per axis.

    >>> net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    >>> shift_consistency(net, torch.randn(2, 3, 16, 16)).consistency.tolist()
    [1.0, 1.0]
    """
    _check_input(model, x)
    axes = tuple(axes)
    if not axes or any(a not in _AXIS_DIM for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct names from {tuple(_AXIS_DIM)}, got {axes!r}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative integer, got {max_shift!r}")
    shifts = range(0 if include_zero else 1, max_shift + 1)
    if not shifts:
        raise ValueError("no shifts to test: use max_shift >= 1 or include_zero=True")
    columns: dict[str, torch.Tensor] = {}
    with measuring(model), torch.no_grad():
        ref = _logits(model, x).argmax(-1)
        for a in axes:
            same = [
                _logits(model, torch.roll(x, s, _AXIS_DIM[a])).argmax(-1) == ref for s in shifts
            ]
            columns[f"consistency_{a}"] = torch.stack(same).double().mean(0)
    overall = torch.stack(list(columns.values())).mean(0)
    return _frame({"consistency": overall, **columns})


def _psnr_metric(
    model: nn.Module,
    x: torch.Tensor,
    transforms: list[Callable[[torch.Tensor], torch.Tensor]],
    name: str,
    output: str,
) -> pd.DataFrame:
    to_output = output_fn(output)
    with measuring(model), torch.no_grad():
        p = to_output(_logits(model, x))
        sq = torch.stack([(to_output(_logits(model, t(x))) - p).square() for t in transforms])
    mse = sq.double().mean(dim=(0, 2))
    return _frame({name: psnr_db(mse), f"{name}_mse": mse})


def _rand(shape: tuple[int, ...], gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws from ``gen`` (on its device), returned on the CPU."""
    return torch.rand(shape, generator=gen, dtype=dtype, device=gen.device).cpu()


def _uniform(n: int, k: int, bound: float, seed: int | torch.Generator) -> torch.Tensor:
    gen = seeded_generator(seed, "metrics")
    return (_rand((n, k), gen) * 2 - 1) * bound


def eq_t(
    model: nn.Module, x: torch.Tensor, *, max_frac: float = 1 / 8, num_samples: int = 10,
    seed: int | torch.Generator = 0, output: str = "softmax",
) -> pd.DataFrame:
    """EQ-T: integer translations with zero fill (StyleGAN3), PSNR of ``p(T x)`` vs ``p(x)``.

    Convention:
        ``(dx, dy) = round(u * (W, H))``, ``u ~ U[-max_frac, max_frac]^2`` (StyleGAN3's
        1/8 of the size), the same ``num_samples`` shifts for every image; zero fill
        (:func:`integer_translate`), i.e. the value 0 of the (normalised) input.

        Adapted to classifiers: PSNR in dB between softmax outputs with peak 1
        (probabilities), ``10 log10(1 / MSE)`` with ``MSE`` the mean over the draws and
        the classes of ``(p(T x) - p(x))^2``, per image (StyleGAN3 likewise
        pools the squared error before the log). ``MSE == 0`` gives ``+inf``: aggregate
        over images with the median, or through the ``*_mse`` column. StyleGAN3
        compares generated images (peak 2) inside a border mask; a classifier's output
        has no border, so nothing is masked.

        ``output`` picks ``p`` as in :func:`lielib.lee` (``softmax``, ``log_softmax``,
        ``logits``); the peak stays 1 in the output's units.

    Returns:
        Columns ``image``, ``eq_t`` (dB) and ``eq_t_mse``; likewise for EQ-T_frac, EQ-R.

    >>> net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    >>> x = torch.randn(2, 3, 16, 16)
    >>> eq_t(net, x, max_frac=0).eq_t.tolist()  # no shift: exactly invariant
    [inf, inf]
    >>> bool((eq_t(net, x).eq_t > 30).all())  # pooling is nearly so (zero fill changes the mean)
    True
    """
    _check_input(model, x, seed)
    _check_bound(max_frac, "max_frac")
    _check_count(num_samples, "num_samples")
    h, w = x.shape[-2:]
    u = _uniform(num_samples, 2, max_frac, seed)
    shifts = torch.round(u * torch.tensor([w, h])).long().tolist()
    fns = [lambda z, s=s: integer_translate(z, *s) for s in shifts]
    return _psnr_metric(model, x, fns, "eq_t", output)


def eq_t_frac(
    model: nn.Module, x: torch.Tensor, *, max_frac: float = 1 / 8, num_samples: int = 10,
    seed: int | torch.Generator = 0, output: str = "softmax",
) -> pd.DataFrame:
    """EQ-T_frac: fractional translations by ideal (sinc) resampling; PSNR as :func:`eq_t`.

    Convention:
        ``(dx, dy) = u * (W, H)`` pixels, ``u ~ U[-max_frac, max_frac]^2``, not rounded;
        applied by :func:`lielib.fourier.fourier_shift` (periodic band-limited
        interpolation: circular, no fill). StyleGAN3 uses a Lanczos-3 kernel with zero
        fill instead.

    >>> net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    >>> bool((eq_t_frac(net, torch.randn(2, 3, 16, 16)).eq_t_frac > 100).all())
    True
    """
    _check_input(model, x, seed)
    _check_bound(max_frac, "max_frac")
    _check_count(num_samples, "num_samples")
    h, w = x.shape[-2:]
    shifts = (_uniform(num_samples, 2, max_frac, seed) * torch.tensor([w, h])).tolist()
    fns = [lambda z, s=s: fourier_shift(z, *s) for s in shifts]
    return _psnr_metric(model, x, fns, "eq_t_frac", output)


def eq_r(
    model: nn.Module,
    x: torch.Tensor,
    *,
    max_angle: float = math.pi,
    num_samples: int = 10,
    up: int = 4,
    seed: int | torch.Generator = 0,
    output: str = "softmax",
) -> pd.DataFrame:
    """EQ-R: band-limited rotations (:func:`lielib.fourier.fourier_rotate`); PSNR as ``eq_t``.

    Convention:
        Angles in radians, uniform in ``[-max_angle, max_angle]`` (StyleGAN3 and the
        paper's code: the full circle), the same ``num_samples`` angles for every
        image; ``up``-fold band-limited upsampling; the corners are filled with 0.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    >>> list(eq_r(net, torch.randn(2, 3, 8, 8), num_samples=2).columns)
    ['image', 'eq_r', 'eq_r_mse']
    """
    _check_input(model, x, seed)
    _check_bound(max_angle, "max_angle")
    _check_count(num_samples, "num_samples")
    angles = _uniform(num_samples, 1, max_angle, seed)[:, 0].tolist()
    fns = [lambda z, a=a: fourier_rotate(z, a, up=up) for a in angles]
    return _psnr_metric(model, x, fns, "eq_r", output)


def sampled_invariance(
    model: nn.Module,
    x: torch.Tensor,
    action: str | Action,
    *,
    t_max: float,
    num_samples: int = 10,
    seed: int | torch.Generator = 0,
    output: str = "softmax",
    stencil: str = "paper",
) -> pd.DataFrame:
    """Sampled finite-transform invariance along a lielib action, per image.

    ``rate = mean_t mean_c |p_c(T_t x) - p_c(x)| / |t|``, a finite-difference analogue of
    :func:`lielib.lee` with ``reduce="mean_abs"``. As ``t_max -> 0`` it tends to LEE for
    a smooth action (``saturate``); bilinear resampling has one-sided derivatives at pixel
    centres, so for geometric actions the limit averages the ``t > 0`` and ``t < 0`` sides.

    Convention:
        ``T_t x = action.act(x, t)`` (units of ``t`` are the action's: normalised image
        units, radians for ``rotate``; ``stencil`` as in :mod:`lielib.sampling`), ``t``
        uniform in ``[-t_max, t_max]`` without 0, the same ``num_samples`` values for
        every image. ``p`` is the model's ``output`` (``softmax``, ``log_softmax`` or
        ``logits``).

    Returns:
        Columns ``image``, ``action``, ``finite_difference_lee`` (the rate),
        ``mean_abs_change`` (``mean_t mean_c |p(T_t x) - p(x)|``) and
        ``prediction_unchanged`` (fraction of draws with the same argmax).

    >>> net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    >>> sampled_invariance(net, torch.randn(1, 3, 8, 8), "saturate", t_max=0.1).action[0]
    'saturate'
    """
    _check_input(model, x, seed)
    _check_count(num_samples, "num_samples")
    n = num_samples
    act = get_action(action)
    to_output = output_fn(output)
    if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max must be a positive finite number, got {t_max!r}")
    gen = seeded_generator(seed, "metrics")
    mag = 1 - _rand((n,), gen)  # (0, 1]
    sign = torch.where(_rand((n,), gen, torch.float32) < 0.5, -1.0, 1.0).double()
    ts = (t_max * mag * sign).tolist()
    with measuring(model), torch.no_grad():
        z = _logits(model, x)
        p, ref = to_output(z), z.argmax(-1)
        change, rate, same = [], [], []
        for t in ts:
            zt = _logits(model, act.act(x, t, stencil=stencil))
            d = (to_output(zt) - p).abs().double().mean(-1)
            change.append(d)
            rate.append(d / abs(t))
            same.append((zt.argmax(-1) == ref).double())
    frame = _frame(
        {
            "finite_difference_lee": torch.stack(rate).mean(0),
            "mean_abs_change": torch.stack(change).mean(0),
            "prediction_unchanged": torch.stack(same).mean(0),
        }
    )
    frame.insert(1, "action", act.name)
    return frame
