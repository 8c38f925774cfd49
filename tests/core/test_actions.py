"""Group laws and conventions of every action, pinned on asymmetric inputs."""

import math

import pytest
import torch
from torch.func import jvp

from lielib.actions import GENERATORS, AffineAction, get_action, list_actions
from lielib.sampling import bilinear_sample, normalized_grid, paper_cells

GEOMETRIC = list(GENERATORS)
ALL = list_actions()


def image(b=2, c=3, h=9, w=13, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, dtype=torch.float64, generator=gen)


def test_registry_names():
    assert ALL == GEOMETRIC + ["saturate"]
    with pytest.raises(ValueError, match="unknown action 'rotation'.*rotate"):
        get_action("rotation")


@pytest.mark.parametrize("name", GEOMETRIC)
def test_matrix_group_laws(name):
    a = get_action(name)
    s, t = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.8], dtype=torch.float64)

    def full(m):
        return torch.cat([m[0], torch.tensor([[0.0, 0, 1]], dtype=m.dtype)])

    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(full(a.theta(torch.zeros(1, dtype=torch.float64))), eye)
    torch.testing.assert_close(full(a.theta(s)) @ full(a.theta(t)), full(a.theta(s + t)))
    torch.testing.assert_close(full(a.theta(t)) @ full(a.theta(-t)), eye)
    # the generator is d theta / dt at 0
    _, dtheta = jvp(a.theta, (torch.zeros(1, dtype=torch.float64),), (torch.ones(1, dtype=torch.float64),))
    torch.testing.assert_close(dtheta[0], torch.tensor(GENERATORS[name], dtype=torch.float64))


@pytest.mark.parametrize("stencil", ["paper", "central"])
@pytest.mark.parametrize("name", ALL)
def test_identity_at_zero(name, stencil):
    x = image()
    torch.testing.assert_close(get_action(name).act(x, 0.0, stencil=stencil), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("stencil", ["paper", "central"])
def test_integer_translations_compose_and_invert(stencil):
    x = image(h=9, w=17)
    px = 2 / (17 - 1)  # one pixel in normalised units
    a = get_action("translate_x")
    two_then_three = a.act(a.act(x, 2 * px, stencil=stencil), 3 * px, stencil=stencil)
    five = a.act(x, 5 * px, stencil=stencil)
    # away from the reflected border the resampling is exact
    torch.testing.assert_close(two_then_three[..., : 17 - 5], five[..., : 17 - 5])
    back = a.act(a.act(x, 4 * px, stencil=stencil), -4 * px, stencil=stencil)
    torch.testing.assert_close(back[..., 4 : 17 - 4], x[..., 4 : 17 - 4])


def test_saturate_group_laws():
    a = get_action("saturate")
    x = image()
    torch.testing.assert_close(a.act(a.act(x, 0.4), -1.1), a.act(x, -0.7))
    torch.testing.assert_close(a.act(a.act(x, 0.4), -0.4), x)
    torch.testing.assert_close(a.tangent(x), x)  # the paper's d/dt (1 + t) x


def test_rotate_quarter_turn_is_rot90():
    x = image(h=11, w=11)
    torch.testing.assert_close(get_action("rotate").act(x, math.pi / 2), torch.rot90(x, -1, (2, 3)))


def spike(h=9, w=9, row=3, col=5):
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[0, 0, row, col] = 1.0
    return x


def argmax2d(x):
    i = int(x[0, 0].argmax())
    return divmod(i, x.shape[-1])


def test_translate_conventions():
    """t = 1 is half the width; output samples input at u + t, so content moves left/up."""
    x = spike(9, 9, row=3, col=5)
    assert argmax2d(get_action("translate_x").act(x, 0.25)) == (3, 4)  # 0.25 * 4 px = 1 px
    assert argmax2d(get_action("translate_y").act(x, 0.5)) == (1, 5)
    moved = get_action("translate_x").act(spike(col=3), -1.0)  # 4 px to the right
    assert float(moved[0, 0, 3, 7]) == pytest.approx(1.0)
    assert float(moved[0, 0, 3, 1]) == pytest.approx(1.0)  # reflected about column 0


def test_linear_conventions():
    # scale: theta = exp(-t) I samples nearer the centre, i.e. zooms in (content moves outward)
    zoomed = get_action("scale").act(spike(9, 9, row=3, col=5), math.log(2.0))
    assert argmax2d(zoomed) == (2, 6)  # (v, u) = (-0.25, 0.25) -> (-0.5, 0.5)
    # shear_x: u_in = u + t v; on the bottom row (v = 1) t = 0.5 samples 2 px to the right
    sh = get_action("shear_x").act(spike(9, 9, row=8, col=6), 0.5)
    assert argmax2d(sh) == (8, 4)
    # stretch_x: u_in = exp(t) u; stretch_y leaves columns alone
    st = get_action("stretch_x").act(spike(9, 9, row=0, col=8), math.log(2.0))
    assert argmax2d(st) == (0, 6)
    assert argmax2d(get_action("stretch_y").act(spike(9, 9, row=4, col=8), 0.7)) == (4, 8)
    # hyperbolic rotation: u_in = cosh t u + sinh t v, v_in = sinh t u + cosh t v
    t = math.asinh(0.5)
    hy = get_action("hyperbolic_rotate").act(spike(9, 9, row=4, col=6), t)  # (u, v) = (0.5, 0)
    # output (u, v) samples (cosh t u + sinh t v, sinh t u + cosh t v); the spike moves along
    # the hyperbola through (0.5, 0); pin that it leaves the centre row
    assert argmax2d(hy)[0] != 4


def fixed_cell_sample(x, theta, cells):
    h, w = x.shape[-2:]
    coords = torch.einsum("hwk,bjk->bhwj", normalized_grid(h, w, dtype=theta.dtype), theta)
    ix = (coords[..., 0] + 1) / 2 * (w - 1)
    iy = (coords[..., 1] + 1) / 2 * (h - 1)
    return bilinear_sample(x, ix, iy, *cells)


@pytest.mark.parametrize("name", GEOMETRIC)
def test_paper_tangent_is_the_derivative_of_its_stencil(name):
    """With the paper's cells frozen, resampling is smooth in t: compare with float64 FD."""
    a: AffineAction = get_action(name)
    x = image(h=28, w=28)
    b = x.shape[0]
    cells = paper_cells(a.theta(torch.zeros(b, dtype=torch.float64)), 28, 28)
    h = 1e-5

    def at(t):
        return fixed_cell_sample(x, a.theta(torch.full((b,), t, dtype=torch.float64)), cells)

    fd = (at(h) - at(-h)) / (2 * h)
    torch.testing.assert_close(a.tangent(x, stencil="paper"), fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", GEOMETRIC)
def test_central_tangent_matches_central_finite_difference(name):
    a = get_action(name)
    x = image(h=9, w=13)
    # bilinear resampling is only piecewise smooth in t: the FD error is O(h), so h is small
    h = 1e-6
    fd = (a.act(x, h, stencil="central") - a.act(x, -h, stencil="central")) / (2 * h)
    inner = (..., slice(1, -1), slice(1, -1))  # reflection makes the border a kink
    torch.testing.assert_close(a.tangent(x, stencil="central")[inner], fd[inner], atol=1e-6, rtol=1e-6)


def test_translate_stencils_known_answer():
    """paper: forward differences except where float32 rounding flips them; central: central."""
    x = image(h=28, w=28)
    scale = (28 - 1) / 2  # pixels per normalised unit
    a = get_action("translate_x")
    pad = torch.cat([x, x[..., -2:-1]], dim=-1)  # reflection: column 28 is column 26
    forward = (pad[..., 1:] - pad[..., :-1]) * scale
    paper = a.tangent(x, stencil="paper")
    flipped = (paper - forward).abs().amax(dim=(0, 1, 2)) > 1e-9
    assert int(flipped.sum()) == 3
    j = int(torch.nonzero(flipped)[0])
    torch.testing.assert_close(paper[..., j], (x[..., j] - x[..., j - 1]) * scale)
    central = a.tangent(x, stencil="central")
    torch.testing.assert_close(central[..., 1:-1], (x[..., 2:] - x[..., :-2]) / 2 * scale)


@pytest.mark.parametrize("bad", [torch.zeros(3, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.int64)])
def test_bad_images_raise(bad):
    with pytest.raises((ValueError, TypeError), match="rotate"):
        get_action("rotate").act(bad, 0.1)


# --- precision and bad input -------------------------------------------------------------

HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", ["rotate", "scale", "translate_x", "saturate"])
def test_half_precision_matches_float32(name, dtype):
    """CPU matrix_exp in half precision is garbage (expm(0) ~ -1e30): computed in float32."""
    a = get_action(name)
    x = image(b=3).float()
    xh = x.to(dtype)
    ref = xh.float()  # the same image, exactly
    t = torch.tensor([0.2, -0.1, 0.0])
    out = a.act(xh, t)
    assert out.dtype == dtype
    torch.testing.assert_close(out, a.act(ref, t).to(dtype), rtol=0, atol=0)
    tan = a.tangent(xh)
    assert tan.dtype == dtype and torch.isfinite(tan).all()
    torch.testing.assert_close(tan, a.tangent(ref).to(dtype), rtol=0, atol=0)
    # identity at t = 0 holds in half precision too
    torch.testing.assert_close(a.act(xh, 0.0), xh, rtol=0, atol=0)


def test_theta_is_computed_in_float32_for_half_t():
    a = get_action("rotate")
    th = a.theta(torch.zeros(4, dtype=torch.bfloat16))
    assert th.dtype == torch.float32
    torch.testing.assert_close(th, torch.eye(3)[:2].expand(4, 2, 3))


def test_empty_batch_gives_an_empty_result():
    x = torch.zeros(0, 3, 5, 5)
    for name in ALL:
        a = get_action(name)
        assert a.act(x, 0.3).shape == x.shape
        assert a.tangent(x).shape == x.shape


@pytest.mark.parametrize(
    "x, t, error, match",
    [
        (torch.zeros(2, 3, 0, 5), 0.1, ValueError, "one pixel"),
        (torch.zeros(2, 0, 5, 5), 0.1, ValueError, "one channel"),
        (torch.zeros(3, 5, 5), 0.1, ValueError, r"x\[None\]"),
        (torch.zeros(2, 3, 5, 5, dtype=torch.long), 0.1, TypeError, "floating-point"),
        (torch.full((2, 3, 5, 5), float("nan")), 0.1, ValueError, "NaN"),
        (torch.zeros(2, 3, 5, 5), float("nan"), ValueError, "t must be finite"),
        (torch.zeros(2, 3, 5, 5), "big", TypeError, "t must be a number"),
        (torch.zeros(2, 3, 5, 5), [0.1, 0.2, 0.3], ValueError, r"one value per image \(2,\)"),
    ],
    ids=["no-rows", "no-channels", "3d", "integer", "nan-image", "nan-t", "str-t", "wrong-t"],
)
@pytest.mark.parametrize("name", ["rotate", "saturate"])
def test_bad_input_is_a_clear_error(name, x, t, error, match):
    a = get_action(name)
    with pytest.raises(error, match=match):
        a.act(x, t)
    if not isinstance(t, float) or math.isnan(t):  # t-only errors do not concern the tangent
        return
    with pytest.raises(error, match=match):
        a.tangent(x)


def test_expanded_input_is_resampled_like_a_contiguous_copy():
    x = image(b=1).expand(3, -1, -1, -1)
    for name in ("rotate", "saturate"):
        a = get_action(name)
        torch.testing.assert_close(a.act(x, 0.2), a.act(x.contiguous(), 0.2))
        torch.testing.assert_close(a.tangent(x), a.tangent(x.contiguous()))


def test_unknown_stencil_in_act():
    with pytest.raises(ValueError, match="unknown stencil"):
        get_action("rotate").act(image(), 0.1, stencil="centre")


# --- isotropic pixel coordinates: rotations are rotations on any grid ---------------------


def _raw_act(a: AffineAction, x, t, stencil):
    """The formula before isotropy: theta = exp(t G) with G as given, in normalised units."""
    from lielib.sampling import affine_sample

    t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
    g = torch.zeros(3, 3, dtype=x.dtype)
    g[:2] = torch.tensor(a.generator, dtype=x.dtype)
    theta = torch.linalg.matrix_exp(t[:, None, None] * g)[:, :2]
    return affine_sample(x, theta, stencil=stencil)


@pytest.mark.parametrize("stencil", ["paper", "central"])
@pytest.mark.parametrize("size", [16, 28, 32])
@pytest.mark.parametrize("name", GEOMETRIC)
def test_square_images_are_resampled_as_before(name, size, stencil):
    """On square grids the isotropic generator is the normalised one: nothing changes."""
    from lielib.tangents import tangents

    a = get_action(name)
    x = image(h=size, w=size)
    for t in (0.07, -0.4):
        torch.testing.assert_close(a.act(x, t, stencil=stencil), _raw_act(a, x, t, stencil),
                                   atol=1e-12, rtol=0)
    zero = torch.zeros((), dtype=torch.float64)
    raw = jvp(lambda t: _raw_act(a, x, t, stencil), (zero,), (torch.ones_like(zero),))[1]
    torch.testing.assert_close(a.tangent(x, stencil=stencil), raw, atol=1e-9, rtol=0)
    torch.testing.assert_close(tangents(x, [name], stencil=stencil)[0], raw, atol=1e-9, rtol=0)
    x32 = x.float()  # float32, as the book measures: the same numbers to the last bit
    assert torch.equal(a.act(x32, 0.3, stencil=stencil), _raw_act(a, x32, 0.3, stencil))
    tau_u = get_action("translate_x").tangent(x32, stencil=stencil)
    tau_v = get_action("translate_y").tangent(x32, stencil=stencil)
    velocity = normalized_grid(size, size, dtype=x32.dtype) @ torch.tensor(a.generator).float().T
    old = velocity[..., 0] * tau_u + velocity[..., 1] * tau_v  # the batched tangent, as before
    assert torch.equal(tangents(x32, [name], stencil=stencil)[0], old)


def blob(h, w, cy, cx, sigma=4.0):
    """A smooth Gaussian blob centred at pixel (cy, cx), (1, 1, H, W) float64."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))[None, None]


@pytest.mark.parametrize("hw", [(48, 64), (64, 48), (33, 21)])
def test_rotate_is_a_rotation_in_pixels_on_non_square_images(hw):
    h, w = hw
    cy, cx = (h - 1) / 2, (w - 1) / 2
    # compared inside the inscribed circle: beyond it the corners sample reflected content
    inside = (blob(h, w, cy, cx, sigma=1.0) > math.exp(-(min(h, w) / 2 - 1) ** 2 / 2)).expand(1, 1, h, w)
    # a centred disc stays a disc
    disc = blob(h, w, cy, cx, sigma=4.0)
    torch.testing.assert_close(get_action("rotate").act(disc, 0.6)[inside], disc[inside],
                               atol=0.02, rtol=0)  # bilinear error of a sigma=4 blob
    # an off-centre blob lands where the rotation of pixel coordinates puts it
    t, dy, dx = 0.5, 6.0, 9.0
    moved = get_action("rotate").act(blob(h, w, cy + dy, cx + dx), t)
    # output p samples input R(t) p, so content at q appears at R(-t) q
    c, s = math.cos(t), math.sin(t)
    ex, ey = c * dx - s * dy, s * dx + c * dy
    torch.testing.assert_close(moved[inside], blob(h, w, cy + ey, cx + ex)[inside], atol=0.02,
                               rtol=0)


def test_rotate_agrees_with_the_band_limited_rotation_on_non_square_images():
    from lielib.fourier import fourier_rotate

    x = blob(48, 64, 20.0, 38.0)
    torch.testing.assert_close(get_action("rotate").act(x, 0.4), fourier_rotate(x, 0.4),
                               atol=0.02, rtol=0)  # bilinear against sinc interpolation


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "hyperbolic_rotate"])
def test_tangents_of_non_square_images_match_the_action(name):
    """The batched tangents and the action's own derivative use the same grid's generator."""
    from lielib.tangents import tangents

    x = image(h=12, w=20)
    for stencil in ("paper", "central"):
        torch.testing.assert_close(tangents(x, [name], stencil=stencil)[0],
                                   get_action(name).tangent(x, stencil=stencil),
                                   atol=1e-9, rtol=1e-9)


def test_generator_on_keeps_square_grids_and_linear_relations():
    from lielib.actions import generator_on

    for name, g in GENERATORS.items():
        assert generator_on(g, 28, 28) == tuple(tuple(float(v) for v in row) for row in g), name
    rot = torch.tensor(generator_on(GENERATORS["rotate"], 48, 64))
    shx = torch.tensor(generator_on(GENERATORS["shear_x"], 48, 64))
    shy = torch.tensor(generator_on(GENERATORS["shear_y"], 48, 64))
    torch.testing.assert_close(rot, shx - shy)  # rotate = shear_x - shear_y on every grid
