"""One-parameter groups acting on images.

Every action is a one-parameter group ``t -> T_t`` with ``T_0 = id`` and
``T_s T_t = T_{s+t}``. Geometric actions are built from a generator ``G`` (a ``2 x 3``
matrix) through ``theta(t) = exp(t G)``; the colour action ``saturate`` implements the
same small protocol, so nothing downstream branches on a transform's name.

Convention (all geometric actions):
    * Image tensors are ``(B, C, H, W)``; coordinates are normalised to ``[-1, 1]`` with
      ``align_corners=True``; ``u`` runs along the width, ``v`` down the height.
    * ``theta(t)`` maps output coordinates to sampling coordinates, as
      ``F.affine_grid`` does: ``T_t x (p) = x(theta(t) p)``.
    * The linear part of ``G`` acts on isotropic pixel coordinates, so ``rotate`` is a
      rotation (and a shear a shear) on any ``H x W`` grid: in normalised coordinates
      the generator is ``[[a, b r, c], [d / r, e, f]]`` for ``G = [[a, b, c], [d, e, f]]``
      and ``r = (H - 1) / (W - 1)`` (:func:`generator_on`); ``r = 1`` for square images.
    * ``t`` is in normalised units for translations (``t = 1`` moves by half the image
      width for ``translate_x``, half its height for ``translate_y``), radians for
      ``rotate``.
    * Bilinear interpolation, reflection padding about the border pixel centres.
    * ``tangent(x) = d/dt T_t x`` at ``t = 0``, with a stencil of :mod:`lielib.sampling`:
      ``"central"`` by default (a consistent central difference, which ranks exactly
      invariant networks correctly); ``"paper"`` reproduces the paper's code. ``act``
      samples with the ``"paper"`` cells by default, i.e. as ``F.grid_sample`` does; at a
      finite ``t`` the two differ only by rounding at points on pixel centres.

Precision: the group element ``exp(t G)`` and the sampling grid are computed in float64
for float64 images and in float32 otherwise; half-precision images (``float16``,
``bfloat16``) are resampled in float32 and the result is rounded back to their dtype
(torch's CPU ``matrix_exp`` is wrong in half precision). An empty batch (``B = 0``)
gives an empty result; images with no pixels, and NaN or infinite images or ``t``, raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import jvp

from .sampling import STENCILS, affine_sample

__all__ = [
    "GENERATORS",
    "Action",
    "AffineAction",
    "IntensityScaling",
    "check_image",
    "check_model",
    "compute_dtype",
    "generator_on",
    "get_action",
    "list_actions",
]

# Rows of the 2x3 generator: d theta / dt at t = 0.
GENERATORS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "translate_x": ((0, 0, 1), (0, 0, 0)),
    "translate_y": ((0, 0, 0), (0, 0, 1)),
    "rotate": ((0, 1, 0), (-1, 0, 0)),
    "scale": ((-1, 0, 0), (0, -1, 0)),
    "shear_x": ((0, 1, 0), (0, 0, 0)),
    "shear_y": ((0, 0, 0), (1, 0, 0)),
    "stretch_x": ((1, 0, 0), (0, 0, 0)),
    "stretch_y": ((0, 0, 0), (0, 1, 0)),
    "hyperbolic_rotate": ((0, 1, 0), (1, 0, 0)),
}


@runtime_checkable
class Action(Protocol):
    """A one-parameter group acting on ``(B, C, H, W)`` images.

    Any object with a ``name``, ``act`` and ``tangent`` is one, and every measuring
    function accepts it in place of a name:

    >>> class Brighten:
    ...     name = "brighten"
    ...     def act(self, x, t, *, stencil="paper"):
    ...         return x + t
    ...     def tangent(self, x, *, stencil="central"):
    ...         return torch.ones_like(x)
    >>> isinstance(Brighten(), Action), get_action(Brighten()).name
    (True, 'brighten')
    """

    name: str

    def act(self, x: torch.Tensor, t, *, stencil: str = "paper") -> torch.Tensor:
        """``T_t x`` for a finite ``t`` (a number, a 0-d tensor, or one value per image)."""
        ...

    def tangent(self, x: torch.Tensor, *, stencil: str = "central") -> torch.Tensor:
        """``d/dt T_t x`` at ``t = 0``, same shape as ``x``."""
        ...


def check_image(x: torch.Tensor, name: str, *, finite: bool = True) -> None:
    """Raise unless ``x`` is a floating-point image batch ``(B, C, H, W)``; ``name`` says who asks.

    >>> check_image(torch.zeros(2, 3, 4, 4), "demo")  # passes silently

    ``B = 0`` passes (an empty batch); ``C``, ``H`` or ``W`` of 0 does not. With ``finite``
    the values must be finite (the check is skipped inside ``torch.func`` transforms,
    where it cannot be evaluated).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{name}: expected an image batch (B, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch axis with x[None] or convert other layouts with lielib.layout.to_nchw"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point image, got {x.dtype}; convert with x.float()"
        )
    if min(x.shape[1:]) == 0:
        raise ValueError(
            f"{name}: an image needs at least one channel and one pixel, got shape "
            f"{tuple(x.shape)}"
        )
    if x.device.type == "meta":
        raise ValueError(f"{name}: the image is on the meta device and holds no values")
    if finite and x.numel() and not _all_finite(x):
        raise ValueError(
            f"{name}: the image holds NaN or infinite values; check the data pipeline "
            "(e.g. torch.isfinite(x).all())"
        )


def check_model(model: nn.Module, x: torch.Tensor | None = None, who: str = "lielib") -> None:
    """Raise unless ``model`` is an ``nn.Module`` whose parameters match ``x``'s dtype and device.

    A mismatch would otherwise surface as an error from inside the model's first layer.

    >>> check_model(nn.Linear(2, 2), torch.zeros(1, 2))  # passes silently
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: model must be a torch.nn.Module, got {type(model).__name__}; "
                        "wrap a function in an nn.Module to measure it layer by layer")
    if x is None:
        return
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        return
    if param.device.type == "meta":
        raise ValueError(f"{who}: the model's parameters are on the meta device and hold no "
                         "values; materialise them first, e.g. model.to_empty(device='cpu') "
                         "and model.load_state_dict(...)")
    if param.device != x.device:
        raise ValueError(f"{who}: the model's parameters are on {param.device} and x on "
                         f"{x.device}; move one of them, e.g. x.to({str(param.device)!r})")
    if param.dtype != x.dtype:
        raise TypeError(f"{who}: the model's parameters are {param.dtype} and x is {x.dtype}; "
                        f"convert x with x.to({param.dtype}) (or the model with model.to(...))")


def _all_finite(x: torch.Tensor) -> bool:
    try:
        return bool(torch.isfinite(x).all())
    except RuntimeError:  # under vmap a tensor's values cannot steer Python control flow
        return True


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype group elements and grids are computed in: float64 for float64, else float32.

    >>> compute_dtype(torch.float16)
    torch.float32
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def _as_t(t, x: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """``t`` as ``(B,)`` in :func:`compute_dtype` of ``x``."""
    if isinstance(t, torch.Tensor):
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must be real, got a tensor of {t.dtype}")
        t = t.to(dtype=compute_dtype(x.dtype), device=x.device)
    else:
        try:
            t = torch.as_tensor(t, dtype=compute_dtype(x.dtype), device=x.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"t must be a number, a 0-d tensor or one value per image, got {t!r}"
            ) from None
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    elif t.shape != (x.shape[0],):
        raise ValueError(
            f"t must be a scalar or have one value per image ({x.shape[0]},), got shape "
            f"{tuple(t.shape)}"
        )
    if check and t.numel() and not _all_finite(t):
        raise ValueError(f"t must be finite, got {t.tolist()}")
    return t


def generator_on(generator, h: int, w: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A generator ``G`` (rows of a ``2 x 3`` matrix) in normalised coordinates of an ``H x W`` grid.

    The linear part of ``G`` acts on pixel coordinates ``(X, Y) = ((W - 1) u, (H - 1) v) / 2``,
    which have the same unit along both axes; the translation column stays in normalised
    units. With ``r = (H - 1) / (W - 1)`` (1 when an axis has a single pixel) the result is
    ``[[a, b r, c], [d / r, e, f]]``: unchanged for square images, and a true rotation
    for ``rotate`` on any grid.

    >>> generator_on(GENERATORS["rotate"], 48, 48)
    ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0))
    >>> generator_on(GENERATORS["rotate"], 5, 9)  # r = 4 / 8
    ((0.0, 0.5, 0.0), (-2.0, 0.0, 0.0))
    """
    r = (h - 1) / (w - 1) if h > 1 and w > 1 else 1.0
    (a, b, c), (d, e, f) = generator
    return ((float(a), b * r, float(c)), (d / r, float(e), float(f)))


@dataclass(frozen=True)
class AffineAction:
    """The affine one-parameter group ``theta(t) = exp(t G)`` acting by resampling.

    ``T_t x (p) = x(exp(t G_HW) p)`` with ``p = (u, v, 1)`` in normalised coordinates and
    ``G_HW`` = :func:`generator_on` of ``G`` for the image's grid; see the module
    docstring for the full convention.

    >>> x = torch.arange(12.0).reshape(1, 1, 3, 4)
    >>> rotate = get_action("rotate")
    >>> torch.allclose(rotate.act(x, 0.0), x)
    True
    >>> rotate.tangent(x).shape
    torch.Size([1, 1, 3, 4])
    """

    name: str
    generator: tuple[tuple[float, float, float], tuple[float, float, float]]

    def generator_matrix(
        self, *, dtype=torch.float64, device=None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``G`` as a ``(3, 3)`` matrix whose last row is zero.

        With ``size = (H, W)`` the generator of that grid (:func:`generator_on`).
        """
        rows = self.generator if size is None else generator_on(self.generator, *size)
        g = torch.zeros(3, 3, dtype=dtype, device=device)
        g[:2] = torch.tensor(rows, dtype=dtype, device=device)
        return g

    def theta(self, t: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``exp(t G)[:2]`` for a batch of ``t`` ``(B,)`` -> ``(B, 2, 3)``.

        ``size = (H, W)`` gives the group of that grid (:func:`generator_on`); computed in
        float64 for float64 ``t`` and in float32 otherwise.
        """
        t = t.to(compute_dtype(t.dtype))
        g = self.generator_matrix(dtype=t.dtype, device=t.device, size=size)
        return torch.linalg.matrix_exp(t[:, None, None] * g)[:, :2, :]

    def _resample(self, x: torch.Tensor, t: torch.Tensor, stencil: str) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.clone() + 0 * t.sum().to(x.dtype)  # empty, but still a function of t
        img = x.to(compute_dtype(x.dtype))
        theta = self.theta(t, tuple(x.shape[-2:]))
        return affine_sample(img, theta, stencil=stencil).to(x.dtype)

    def act(self, x: torch.Tensor, t, *, stencil: str = "paper") -> torch.Tensor:
        check_image(x, self.name)
        if stencil not in STENCILS:
            raise ValueError(f"unknown stencil {stencil!r}; use one of {STENCILS}")
        return self._resample(x, _as_t(t, x), stencil)

    def tangent(self, x: torch.Tensor, *, stencil: str = "central") -> torch.Tensor:
        check_image(x, self.name)
        if stencil not in STENCILS:
            raise ValueError(f"unknown stencil {stencil!r}; use one of {STENCILS}")
        zero = torch.zeros((), dtype=compute_dtype(x.dtype), device=x.device)
        one = torch.ones_like(zero)
        fn = lambda t: self._resample(x, t.expand(x.shape[0]), stencil)
        return jvp(fn, (zero,), (one,))[1]


@dataclass(frozen=True)
class IntensityScaling:
    """The paper's ``saturate``: intensity scaling of the (normalised) input tensor.

    This is *not* HSV saturation. The paper writes ``x -> (1 + t) x``; as a
    one-parameter group lielib uses ``T_t x = exp(t) x``, which has the same tangent
    ``d/dt T_t x = x`` at ``t = 0`` (hence the same Lie derivative) and satisfies
    ``T_s T_t = T_{s+t}`` exactly.

    Convention: acts on every entry of the tensor it is given (after the model's
    mean/std normalisation when applied to model inputs); ``stencil`` is ignored.

    >>> get_action("saturate").act(torch.ones(1, 1, 1, 2), 0.6931471805599453)  # log 2
    tensor([[[[2., 2.]]]])
    """

    name: str = "saturate"

    def act(self, x: torch.Tensor, t, *, stencil: str = "paper") -> torch.Tensor:
        check_image(x, self.name)
        if stencil not in STENCILS:
            raise ValueError(f"unknown stencil {stencil!r}; use one of {STENCILS}")
        scale = torch.exp(_as_t(t, x))[:, None, None, None]
        return (scale * x.to(scale.dtype)).to(x.dtype)

    def tangent(self, x: torch.Tensor, *, stencil: str = "central") -> torch.Tensor:
        check_image(x, self.name)
        if stencil not in STENCILS:
            raise ValueError(f"unknown stencil {stencil!r}; use one of {STENCILS}")
        return x.clone()


_REGISTRY: dict[str, Action] = {name: AffineAction(name, g) for name, g in GENERATORS.items()}
_REGISTRY["saturate"] = IntensityScaling()


def list_actions() -> list[str]:
    """Names of the registered actions, in the paper's order.

    >>> list_actions()[:3], len(list_actions())
    (['translate_x', 'translate_y', 'rotate'], 10)
    """
    return list(_REGISTRY)


def get_action(name: str | Action) -> Action:
    """The action called ``name`` (an ``Action`` passes through unchanged).

    >>> get_action("rotate").generator
    ((0, 1, 0), (-1, 0, 0))
    """
    if isinstance(name, Action) and not isinstance(name, str):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown action {name!r}; available: {', '.join(list_actions())}"
        ) from None
