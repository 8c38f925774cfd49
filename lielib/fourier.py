"""Band-limited resampling: fractional shifts and rotations by ideal (sinc) interpolation.

The images are treated as periodic and band-limited: a shift multiplies the spectrum by
``exp(-2 pi i f s)``, and a rotation resamples a band-limited upsampling and low-passes
back to the original band. These are the transforms of StyleGAN3's EQ-T_frac and EQ-R
(:mod:`lielib.metrics`); images are ``(B, C, H, W)`` (any leading axes for shifts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["fourier_rotate", "fourier_shift"]

_HALF = (torch.float16, torch.bfloat16)


def _check(x: torch.Tensor, who: str, ndim: int | None, **numbers: float) -> torch.dtype:
    """Validate an image and its real parameters; the dtype to compute in (float32 for half)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: x must be a torch.Tensor, got {type(x).__name__}")
    if (x.ndim != ndim) if ndim else x.ndim < 2:
        want = "(B, C, H, W)" if ndim else "(..., H, W)"
        raise ValueError(f"{who}: x must be {want}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{who}: x must be a real floating-point image, got {x.dtype}; "
                        "convert with x.float()")
    if min(x.shape[-2:]) == 0:
        raise ValueError(f"{who}: x has no pixels, shape {tuple(x.shape)}")
    for name, v in numbers.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{who}: {name} must be a finite real number, got {v!r}")
    return torch.float32 if x.dtype in _HALF else x.dtype


def _phase(n: int, shift: float, x: torch.Tensor) -> torch.Tensor:
    """Per-frequency factor of a periodic band-limited shift by ``shift`` samples."""
    f = torch.fft.fftfreq(n, dtype=x.dtype, device=x.device)
    phase = torch.polar(torch.ones_like(f), -2.0 * math.pi * f * shift)
    if n % 2 == 0:  # the real Nyquist cosine can only be scaled: cos(pi (k - s))
        phase[n // 2] = math.cos(math.pi * shift)
    return phase


def fourier_shift(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Fractional circular shift by ideal (sinc) interpolation: an FFT phase shift.

    ``y = IDFT(DFT(x) * exp(-2 pi i (f_x dx + f_y dy)))`` with ``f`` in cycles per sample.

    Convention:
        ``dx`` pixels to the right (towards larger column index), ``dy`` down; for a smooth
        image ``fourier_shift(x, dx, 0)`` approximates lielib's
        ``translate_x.act(x, -2 dx / (W - 1))``.
        Periodic band-limited interpolation (the sinc kernel of the periodic image), so
        content leaving one side re-enters on the other, and an integer shift equals
        ``torch.roll(x, (dy, dx), dims=(-2, -1))``. For an even size the Nyquist
        component is real and can only be scaled, by ``cos(pi s)``; shifts therefore
        compose exactly (``shift a then b == shift a + b``) for odd sizes, for images
        without Nyquist content, or when one of the shifts is an integer.

    >>> x = torch.randn(1, 1, 5, 7, dtype=torch.float64)
    >>> torch.allclose(fourier_shift(x, 2, 1), torch.roll(x, (1, 2), dims=(-2, -1)))
    True
    """
    work = _check(x, "fourier_shift", None, dx=dx, dy=dy)
    h, w = x.shape[-2:]
    z = x.to(work)
    spec = torch.fft.fft2(z)
    spec = spec * _phase(h, dy, z)[:, None] * _phase(w, dx, z)
    return torch.fft.ifft2(spec).real.to(x.dtype)


def _resize_rows(spec: torch.Tensor, m: int) -> torch.Tensor:
    """Zero-pad (``m > n``) or crop (``m < n``) a ``norm="forward"`` spectrum along dim -2.

    An even-size Nyquist row is split in half between ``+-n/2`` when padding (the real
    interpolant) and rebuilt as the sum of the ``+-m/2`` rows when cropping (aliasing),
    so cropping after padding is the identity.
    """
    n = spec.shape[-2]
    if m == n:
        return spec
    k = min(n, m)
    h = (k - 1) // 2
    pos, neg = spec[..., : h + 1, :], spec[..., n - h :, :]
    if m < n:
        mid = [spec[..., m // 2 : m // 2 + 1, :] + spec[..., n - m // 2 : n - m // 2 + 1, :]]
        return torch.cat([pos, *(mid if k % 2 == 0 else []), neg], -2)
    zeros = spec.new_zeros(*spec.shape[:-2], m - n - (k % 2 == 0), spec.shape[-1])
    mid = [spec[..., n // 2 : n // 2 + 1, :] / 2] if k % 2 == 0 else []
    return torch.cat([pos, *mid, zeros, *mid, neg], -2)


def _upsample(x: torch.Tensor, up: int) -> torch.Tensor:
    """Periodic band-limited upsampling by FFT zero-padding: ``(H, W) -> (up H, up W)``."""
    h, w = x.shape[-2:]
    half = _resize_rows(torch.fft.fft2(x, norm="forward"), up * h)[..., : w // 2 + 1]
    if w % 2 == 0 and up > 1:  # split the Nyquist column between +-W/2
        half = torch.cat([half[..., :-1], half[..., -1:] / 2], -1)
    return torch.fft.irfft2(half, s=(up * h, up * w), norm="forward")


def _downsample(fine: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Ideal low-pass to the ``(H, W)`` band and decimation: crop the spectrum."""
    half = _resize_rows(torch.fft.rfft2(fine, norm="forward"), h)[..., : w // 2 + 1]
    if w % 2 == 0 and fine.shape[-1] > w:  # fold -W/2 (Hermitian mirror of +W/2) onto +W/2
        nyq = half[..., -1:]
        half = torch.cat([half[..., :-1], nyq + torch.roll(nyq.flip(-2), 1, -2).conj()], -1)
    return torch.fft.irfft2(half, s=(h, w), norm="forward")


def fourier_rotate(x: torch.Tensor, angle: float, *, up: int = 4) -> torch.Tensor:
    """Band-limited rotation about the image centre (EQ-R's fractional rotation).

    ``y = lowpass_down(x_up(c + R(angle) (p - c)))`` with ``x_up`` the band-limited
    interpolant on the image square and 0 outside; ``R = [[cos, sin], [-sin, cos]]`` acts
    on pixel coordinates ``(column, row)``, ``c = ((W - 1) / 2, (H - 1) / 2)``.

    Convention:
        1. Upsample by ``up`` through FFT zero-padding (periodic sinc interpolation).
        2. Rotate the fine image by bilinear interpolation with periodic wrap, in pixel
           units (a true rotation also for ``H != W``), in the direction of lielib's
           ``rotate`` action for square images. Output points whose source lies outside
           the image square ``[-1/2, N - 1/2]`` (pixel edges, 1e-3 px slack) are ``0``.
        3. Ideal low-pass to the original band and decimate: crop the spectrum of the
           fine image to ``H x W`` (Nyquist bins folded).
        Rotation by 0 is the identity, by ``pi/2`` a ``torch.rot90`` of square images.
        StyleGAN3 instead filters with a windowed-sinc (Lanczos) kernel and masks the
        border; the band limit, the centre and the zero fill are the same.

    >>> x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    >>> torch.allclose(fourier_rotate(x, 0.0), x)
    True
    """
    if isinstance(up, bool) or not isinstance(up, int) or up < 1:
        raise ValueError(f"up must be a positive integer, got {up!r}")
    work = _check(x, "fourier_rotate", 4, angle=angle)
    if x.shape[0] * x.shape[1] == 0:
        return x.clone()
    if work != x.dtype:
        return fourier_rotate(x.to(work), angle, up=up).to(x.dtype)
    h, w = x.shape[-2:]
    hf, wf = up * h, up * w
    # Fine sample k sits at coarse position k / up; use the periodic copy in [-1/2, N - 1/2).
    py = torch.arange(hf, dtype=torch.float64, device=x.device) / up
    px = torch.arange(wf, dtype=torch.float64, device=x.device) / up
    py, px = torch.where(py >= h - 0.5, py - h, py), torch.where(px >= w - 0.5, px - w, px)
    yy, xx = torch.meshgrid(py - (h - 1) / 2, px - (w - 1) / 2, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    sx, sy = cos * xx + sin * yy + (w - 1) / 2, -sin * xx + cos * yy + (h - 1) / 2
    slack = 1e-3
    inside = (sx >= -0.5 - slack) & (sx <= w - 0.5 + slack)
    inside &= (sy >= -0.5 - slack) & (sy <= h - 0.5 + slack)
    # Bilinear with periodic wrap: pad one circular row/column, sample at (k mod N) in
    # fine pixels (align_corners=True); points outside the square get -3, i.e. zero fill.
    gx = torch.remainder(sx * up, wf) * (2 / wf) - 1
    gy = torch.remainder(sy * up, hf) * (2 / hf) - 1
    grid = torch.stack([gx, gy], -1).masked_fill(~inside[..., None], -3.0)
    fine = F.pad(_upsample(x, up), (0, 1, 0, 1), mode="circular")
    grid = grid.to(fine.dtype).expand(x.shape[0], hf, wf, 2)
    rot = F.grid_sample(fine, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return _downsample(rot, h, w).to(x.dtype)
