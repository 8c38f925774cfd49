"""The sensitivity ratio: is a model less sensitive along a transformation than along comparable directions?

``rho_G(x) = (|J tau_G| / |tau_G|) / sqrt(mean_r |J v_r|^2 / |v_r|^2)``, with ``J`` the
Jacobian of the measured output ``p`` at the image ``x`` (norms over classes and over
pixels), ``tau_G`` the action's tangent image and ``v_r`` reference directions with the
tangent's kind of power spectrum and random phases: directions like the transformation's
that carry no transformation.

* ``rho = 0``: the output does not move along the transformation (exact invariance).
* ``rho < 1``: it moves less than along comparable directions (learned invariance).
* ``rho ~ 1``: the transformation is treated like any direction of its spectrum, as by a
  random dense linear classifier.
* ``rho > 1``: the output is *more* sensitive along the transformation.

Raw LEE scales with the Jacobian; ``rho`` does not: it is unchanged when the tangent is
rescaled, and exactly unchanged when the output is multiplied by a constant (logits
times a temperature on ``output="logits"``). On softmax outputs a temperature changes
the softmax Jacobian, and with it ``rho``, but not its scale.

References (``spectrum``):

* ``"gradient"`` (default): one set shared by every action of an image,
  ``v_r = Phi_r(cos a_r tau_u + sin a_r tau_v)``, phase-randomised tangents of
  translations in ``R`` stratified directions ``a_r = pi (r + u) / R``. Every affine
  tangent is ``(G p) . grad x``, a translation tangent whose velocity varies smoothly
  over the image, so its spectrum is a translation tangent's, smoothed. Not comparable
  for ``saturate`` (its tangent is the image, mostly low frequencies). Cost: ``R`` JVPs
  per image beside the tangents' (``R = 8``: 2.2x to 2.7x ``lee``'s time for the
  paper's six quantities on a CPU, ResNet-50 and EfficientNet-Lite0 at 224 px).
* ``"tangent"``: ``v_{G,r} = Phi_r tau_G`` per action, exactly ``tau_G``'s spectrum;
  ``Phi_r`` is linear, so only a basis of the generators' span needs references. Cost:
  ``R`` JVPs per basis element, about ``R + 1`` times ``lee``'s.

``Phi_r`` multiplies the 2-D Fourier transform by the phases of white Gaussian noise,
the same phases for every channel (colour cross-spectra kept): an orthogonal map,
``|Phi_r v| = |v|``, with periodic boundaries. Each image draws its references from a
generator of its own, seeded by ``(seed, image index)`` mixed with a fixed salt
(:func:`reference_generator`), so an image's row is the same alone, in any batch and in
any ``images_per_pass``: it depends on the image, its index and the seed only. The salt
keeps ``seed=s`` from replaying a stream seeded with ``s``, from which a model's weights
may have been drawn (references aligned with weights would bias ``rho``). A
``torch.Generator`` passed as ``seed`` gives one number that takes the integer's place;
the global RNG is never used.

Uncertainty: ``rho_se`` is the delta-method standard error of ``rho`` from the spread
of ``s_r = |J v_r|^2 / |v_r|^2`` over the references, ``rho sd(s_r) / (2 sqrt(R) mean s_r)``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .actions import Action
from .layout import Layout, from_nchw, to_nchw
from .lie import (
    REDUCTIONS,
    action_list,
    batched_jvp,
    check_images_per_pass,
    combine,
    output_fn,
    reduce_classes,
    shared_derivatives,
)
from .prepare import check_input, fold_batchnorm, measuring, tensor_output
from .tangents import layout_tangents, tangents

__all__ = [
    "SPECTRA",
    "phase_randomize",
    "random_phases",
    "reference_generator",
    "sensitivity_ratio",
]

SPECTRA = ("gradient", "tangent")
_SALT = 0x11E5E45  # mixed into integer seeds


def reference_generator(seed: int, image: int) -> torch.Generator:
    """The CPU generator of image number ``image``'s references: ``(seed, image)`` and a salt.

    >>> a = torch.rand(2, generator=reference_generator(0, 1))
    >>> torch.equal(a, torch.rand(2, generator=reference_generator(0, 1)))
    True
    """
    state = np.random.SeedSequence([int(seed), _SALT, int(image)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def _base_seed(seed: int | torch.Generator) -> int:
    """An integer seed as it is; one number drawn from a ``torch.Generator``."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, 2**62, (), generator=seed, device=seed.device))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or a torch.Generator, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


def random_phases(n: int, h: int, w: int, generator: torch.Generator, *,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, h, w // 2 + 1)`` unit complex numbers: the phases of ``rfft2`` of white noise.

    Hermitian by construction, so :func:`phase_randomize` maps real images to real images.

    >>> phases = random_phases(2, 4, 6, torch.Generator().manual_seed(0))
    >>> phases.shape, bool(torch.allclose(phases.abs(), torch.ones(())))
    (torch.Size([2, 4, 4]), True)
    """
    noise = torch.randn(n, h, w, generator=generator, dtype=dtype, device=generator.device)
    spectrum = torch.fft.rfft2(noise)
    size = spectrum.abs()
    return torch.where(size > 0, spectrum / size.clamp_min(torch.finfo(dtype).tiny), 1)


def phase_randomize(v: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """``Phi v = irfft2(rfft2(v) * phases)`` for ``v`` ``(N, C, H, W)`` and phases ``(N, H, W//2+1)``.

    The same phases for every channel; power spectra and cross-spectra of the channels are
    kept, ``|Phi v| = |v|``.

    >>> v = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    >>> phases = random_phases(1, 8, 8, torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> torch.allclose(phase_randomize(v, phases).norm(), v.norm())
    True
    """
    h, w = v.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(v) * phases[:, None], s=(h, w))


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _draws(x: torch.Tensor, layout: Layout, references: int, seed: int):
    """Per image ``b`` from its own generator: a stratification offset and ``R`` phases.

    Returns offsets ``(B,)`` float64 and phases ``(R * B, H, W // 2 + 1)`` (index
    ``r * B + b``) on ``x``'s device.
    """
    h, w = to_nchw(x, layout)[0].shape[-2:]
    offsets, phases = [], []
    for b in range(x.shape[0]):
        gen = reference_generator(seed, b)
        offsets.append(torch.rand((), generator=gen, dtype=torch.float64))
        phases.append(random_phases(references, h, w, gen, dtype=_work_dtype(x.dtype)))
    return torch.stack(offsets), torch.stack(phases, 1).flatten(0, 1).to(x.device)


def _randomized(v: torch.Tensor, layout: Layout, phases: torch.Tensor) -> torch.Tensor:
    """``Phi_r v_r`` for directions ``(R, B, ...)`` in ``layout``; prefix tokens stay zero."""
    img, prefix = to_nchw(v.flatten(0, 1), layout)  # (R * B, C, H, W)
    out = phase_randomize(img.to(phases.real.dtype), phases).to(v.dtype)
    out = from_nchw(out, None if prefix is None else torch.zeros_like(prefix), layout)
    return out.unflatten(0, v.shape[:2])


def _gradient_references(x, layout, stencil, references, offsets, phases) -> torch.Tensor:
    """``(R, B, ...)``: phase-randomised translation tangents in stratified directions."""
    img, prefix = to_nchw(x, layout)
    tau_uv = tangents(img, ["translate_x", "translate_y"], stencil=stencil)  # (2, B, C, H, W)
    r = torch.arange(references, dtype=torch.float64)[:, None]
    angles = math.pi * (r + offsets) / references  # (R, B)
    mix = torch.stack([angles.cos(), angles.sin()], -1).to(tau_uv)  # (R, B, 2)
    base = torch.einsum("rbk,kb...->rb...", mix, tau_uv)  # (R, B, C, H, W)
    zero = None if prefix is None else torch.zeros_like(prefix)
    base = torch.stack([from_nchw(b, zero, layout) for b in base])
    return _randomized(base, layout, phases)


def sensitivity_ratio(
    model: nn.Module,
    x: torch.Tensor,
    actions: str | Action | Sequence[str | Action] | None = None,
    *,
    num_references: int = 8,
    spectrum: str = "gradient",
    seed: int | torch.Generator = 0,
    output: str = "softmax",
    reduce: str = "mean_abs",
    stencil: str = "central",
    in_layout: str | Layout = "NCHW",
    chunk_size: int | None = None,
    images_per_pass: int | None = None,
    fold_bn: bool = True,
    share: bool = True,
    references: int | None = None,
) -> pd.DataFrame:
    """The sensitivity ratio ``rho_G(x)`` per image and action, with raw LEE from the same pass.

    ``rho_G(x) = (|J tau_G| / |tau_G|) / sqrt(mean_r |J v_r|^2 / |v_r|^2)``; see the module
    docstring for the references, their cost and what ``rho`` means. Tangents and
    references share one primal pass and one ``vmap``-ed ``jvp`` per pass of images, as
    in :func:`lielib.lee`, whose arguments (``output``, ``reduce``, ``stencil``,
    ``in_layout``, ``chunk_size``, ``images_per_pass``, ``fold_bn``, ``share``) mean the same.

    Args:
        model: a classifier ``(B, ...) -> (B, num_classes)``, measured in eval mode with
            unfused attention and restored afterwards.
        x: a batch of inputs in ``in_layout`` (``(B, C, H, W)`` by default).
        actions: one name or ``Action``, a sequence of them, or ``None`` for all.
        num_references: ``R >= 2`` reference directions per image (``"gradient"``) or
            per basis action (``"tangent"``); ``references`` is its former name
            (deprecated).
        spectrum: ``"gradient"`` or ``"tangent"``.
        seed: an int or a ``torch.Generator`` (one draw from it replaces the int); image
            ``b`` draws its references from ``(seed, b)`` (:func:`reference_generator`).

    Returns:
        A tidy frame, one row per image and action: ``image``, ``action``, ``lee`` (equal
        to :func:`lielib.lee` with the same arguments), ``rho``, ``rho_se``, ``gain``
        (``|J tau| / |tau|``) and ``reference_gain`` (``sqrt(mean_r s_r)``). ``rho`` is
        NaN where the tangent or every reference is zero (a constant image).
    
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(144, 5))
    >>> frame = sensitivity_ratio(net, torch.randn(2, 3, 8, 8), ["rotate", "saturate"])
    >>> list(frame.columns[:4]), len(frame)
    (['image', 'action', 'lee', 'rho'], 4)
    """
    acts = action_list(actions)
    layout = Layout.parse(in_layout)
    x = check_input(x, "sensitivity_ratio")
    to_output = output_fn(output)
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; use one of {REDUCTIONS}")
    check_images_per_pass(images_per_pass)
    if references is not None:
        warnings.warn("sensitivity_ratio: references is now called num_references",
                      DeprecationWarning, stacklevel=2)
        num_references = references
    references = num_references
    if isinstance(references, bool) or not isinstance(references, numbers.Integral):
        raise TypeError(f"num_references must be an int >= 2, got {references!r}")
    if references < 2:
        raise ValueError("num_references must be >= 2 (their spread is the uncertainty), got "
                         f"{references}")
    if spectrum not in SPECTRA:
        raise ValueError(f"unknown spectrum {spectrum!r}; use one of {SPECTRA}")
    base_seed = _base_seed(seed)

    with measuring(model), torch.no_grad():
        net = fold_batchnorm(model) if fold_bn else model

        def f(inp: torch.Tensor) -> torch.Tensor:
            return to_output(tensor_output(net(inp), "sensitivity_ratio"))

        tau = layout_tangents(acts, x, layout, stencil)  # (K, B, ...)
        independent, coefficients = shared_derivatives(acts, tau) if share else (
            list(range(len(acts))), torch.eye(len(acts), dtype=torch.float64))
        basis = tau[independent]  # (K', B, ...)
        offsets, phases = _draws(x, layout, references, base_seed)
        if spectrum == "gradient":
            refs = _gradient_references(x, layout, stencil, references, offsets, phases)
        else:  # Phi_r of every basis tangent, the same Phi_r for all: (R * K', B, ...)
            refs = torch.stack([_randomized(t.expand(references, *t.shape), layout, phases)
                                for t in basis], 1).flatten(0, 1)
        d = batched_jvp(f, x, torch.cat([basis, refs]), images_per_pass=images_per_pass,
                        chunk_size=chunk_size)
        kb = len(independent)
        d_tau = combine(coefficients, d[:kb])  # (K, B, classes)
        d_ref = combine(torch.eye(d.shape[0] - kb, dtype=torch.float64), d[kb:])
    lee_values = reduce_classes(d_tau, reduce)
    tau_sq = tau.double().flatten(2).square().sum(-1)  # (K, B)
    gain_sq = d_tau.double().square().sum(-1) / tau_sq
    if spectrum == "gradient":
        s_ref = d_ref.double().square().sum(-1) / refs.double().flatten(2).square().sum(-1)  # (R, B)
        s_ref = s_ref[:, None].expand(-1, len(acts), -1)  # (R, K, B)
    else:  # J Phi_r tau_G = sum_b c_Gb J Phi_r tau_b, and |Phi_r tau_G| = |tau_G|
        per_basis = d_ref.double().unflatten(0, (references, kb))  # (R, K', B, classes)
        s_ref = torch.einsum("kb,rb...->rk...", coefficients.double(), per_basis).square().sum(-1)
        s_ref = s_ref / tau_sq
    mean_ref = s_ref.mean(0)
    rho = (gain_sq / mean_ref).sqrt()
    rho_se = rho * s_ref.std(0) / (2 * math.sqrt(references) * mean_ref)
    values = {"lee": lee_values.double(), "rho": rho, "rho_se": rho_se, "gain": gain_sq.sqrt(),
              "reference_gain": mean_ref.sqrt()}
    k, b = rho.shape
    frame = pd.DataFrame({
        "image": np.tile(np.arange(b), k),
        "action": np.repeat([a.name for a in acts], b),
        **{name: v.reshape(-1).cpu().numpy() for name, v in values.items()},
    })
    return frame.sort_values(["image"], kind="stable").reset_index(drop=True)
