"""Band-limited resampling: integer shifts are rolls, shifts compose, rotation conventions."""

import math

import pytest
import torch

from lielib import get_action
from lielib.fourier import fourier_rotate, fourier_shift

F64 = torch.float64


def image(b=2, c=3, h=16, w=16, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=gen, dtype=dtype)


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (6, 5)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("shift", [(3, -2), (0, 5), (-7, 1)], ids=str)
def test_fourier_shift_by_integer_is_roll(hw, shift):
    x = image(h=hw[0], w=hw[1])
    dx, dy = shift
    torch.testing.assert_close(fourier_shift(x, dx, dy), torch.roll(x, (dy, dx), (-2, -1)))


def test_fourier_shift_composes_odd_size():
    x = image(h=9, w=11)
    twice = fourier_shift(fourier_shift(x, 0.3, 1.7), 1.1, -0.45)
    torch.testing.assert_close(twice, fourier_shift(x, 1.4, 1.25))
    torch.testing.assert_close(fourier_shift(fourier_shift(x, 0.6, -0.2), -0.6, 0.2), x)


def test_fourier_shift_composes_even_size_without_nyquist():
    x = image(h=8, w=10)
    spec = torch.fft.fft2(x)
    spec[..., 4, :] = 0
    spec[..., :, 5] = 0
    x = torch.fft.ifft2(spec).real
    twice = fourier_shift(fourier_shift(x, 0.3, 1.7), 1.1, -0.45)
    torch.testing.assert_close(twice, fourier_shift(x, 1.4, 1.25))
    # with Nyquist content it still composes when one shift is an integer
    y = image(h=8, w=10, seed=1)
    torch.testing.assert_close(
        fourier_shift(fourier_shift(y, 2, -1), 0.3, 0.7), fourier_shift(y, 2.3, -0.3)
    )


def test_fourier_shift_direction_matches_lielib_translate():
    n = 32
    yy, xx = torch.meshgrid(torch.arange(n, dtype=F64), torch.arange(n, dtype=F64), indexing="ij")
    blob = torch.exp(-((xx - 12) ** 2 / 18 + (yy - 18) ** 2 / 8))[None, None]
    # +1.5 px to the right is translate_x by t = -1.5 * 2 / (W - 1) (theta samples from x + t)
    lielib_shift = get_action("translate_x").act(blob, -1.5 * 2 / (n - 1))
    assert (fourier_shift(blob, 1.5, 0) - lielib_shift).abs().max() < 0.03


@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (6, 5)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("up", [1, 2, 4], ids=lambda u: f"up{u}")
@pytest.mark.parametrize("angle", [0.0, 2 * math.pi], ids=["0", "2pi"])
def test_fourier_rotate_identity(hw, up, angle):
    x = image(h=hw[0], w=hw[1])
    torch.testing.assert_close(fourier_rotate(x, angle, up=up), x)
    x32 = x.float()
    torch.testing.assert_close(fourier_rotate(x32, angle, up=up), x32, rtol=0, atol=1e-5)


def test_fourier_rotate_quarter_turn_is_rot90_and_lielib_rotate():
    x = image(h=8, w=8)
    r = fourier_rotate(x, math.pi / 2)
    torch.testing.assert_close(r, torch.rot90(x, -1, (-2, -1)))
    torch.testing.assert_close(r, get_action("rotate").act(x, math.pi / 2))


def test_fourier_rotate_small_angle_agrees_with_lielib_rotate():
    n = 32
    yy, xx = torch.meshgrid(torch.arange(n, dtype=F64), torch.arange(n, dtype=F64), indexing="ij")
    blob = torch.exp(-((xx - 12) ** 2 / 18 + (yy - 18) ** 2 / 8))[None, None]
    err = (fourier_rotate(blob, 0.3) - get_action("rotate").act(blob, 0.3)).abs().max()
    opposite = (fourier_rotate(blob, -0.3) - get_action("rotate").act(blob, 0.3)).abs().max()
    assert err < 0.05 < opposite
    twice = fourier_rotate(fourier_rotate(blob, 0.2), 0.3)
    assert (twice - fourier_rotate(blob, 0.5)).abs().max() < 0.01


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_is_computed_in_float32(dtype):
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    s = fourier_shift(x, 0.5, -1.25)
    r = fourier_rotate(x, 0.3)
    assert s.dtype == dtype and r.dtype == dtype
    torch.testing.assert_close(s, fourier_shift(x.float(), 0.5, -1.25).to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(r, fourier_rotate(x.float(), 0.3).to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: fourier_shift(torch.zeros(5), 1.0, 0.0), ValueError, r"\(\.\.\., H, W\)"),
        (lambda: fourier_shift(torch.zeros(1, 1, 4, 4, dtype=torch.long), 1.0, 0.0), TypeError,
         "floating-point"),
        (lambda: fourier_shift(torch.zeros(1, 1, 4, 4), math.nan, 0.0), ValueError, "dx"),
        (lambda: fourier_rotate(torch.zeros(1, 1, 4, 4, dtype=torch.long), 1.0), TypeError,
         "floating-point"),
        (lambda: fourier_rotate(torch.zeros(1, 1, 4, 4), math.inf), ValueError, "angle"),
        (lambda: fourier_rotate(torch.zeros(1, 4, 4), 1.0), ValueError, r"\(B, C, H, W\)"),
    ],
    ids=["1d", "int-shift", "nan-shift", "int-rotate", "inf-angle", "3d-rotate"],
)
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_empty_batch_rotates_to_an_empty_batch():
    assert fourier_rotate(torch.zeros(0, 3, 8, 8), 0.5).shape == (0, 3, 8, 8)
