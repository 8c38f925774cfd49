"""Tangent images: linear in the generator, one basis of the span, any layout, stencils."""

import pytest
import torch

from lielib.actions import GENERATORS, AffineAction, get_action, list_actions
from lielib.layout import Layout
from lielib.tangents import (
    TangentOperator,
    generator_coordinates,
    layout_tangent,
    layout_tangents,
    span_basis,
    tangents,
)

ALL = list_actions()
DT = torch.float64


def image(b=2, c=3, h=9, w=13, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, dtype=DT, generator=gen)


@pytest.mark.parametrize("stencil", ["paper", "central"])
@pytest.mark.parametrize("hw", [(9, 13), (28, 28), (1, 9), (7, 1)])
def test_tangents_are_linear_in_the_generator(stencil, hw):
    x = image(h=hw[0], w=hw[1], seed=5)
    got = tangents(x, ALL, stencil=stencil)
    for k, name in enumerate(ALL):
        ref = get_action(name).tangent(x, stencil=stencil)
        torch.testing.assert_close(got[k], ref, rtol=1e-12, atol=1e-12, msg=name)


def test_tangents_use_a_subclass_tangent():
    class Odd(AffineAction):
        def tangent(self, x, *, stencil="paper"):
            return torch.full_like(x, 7.0)

    x = image()
    got = tangents(x, [Odd("odd", GENERATORS["rotate"]), "rotate"])
    assert torch.equal(got[0], torch.full_like(x, 7.0))
    torch.testing.assert_close(got[1], get_action("rotate").tangent(x))


def test_span_basis_of_the_paper_quantities():
    six = ["translate_x", "translate_y", "rotate", "shear_x", "shear_y", "saturate"]
    basis, coef = span_basis(generator_coordinates(six))
    assert [six[k] for k in basis] == ["translate_x", "translate_y", "rotate", "shear_x",
                                       "saturate"]
    # shear_y = shear_x - rotate
    assert coef[4].tolist() == pytest.approx([0, 0, -1, 1, 0])
    basis_all, coef_all = span_basis(generator_coordinates(ALL))
    assert len(basis_all) == 7
    coords = generator_coordinates(ALL)
    torch.testing.assert_close(coef_all @ coords[basis_all], coords)

    class Custom:
        name = "blur"

        def act(self, x, t, *, stencil="paper"):
            return x

        def tangent(self, x, *, stencil="paper"):
            return torch.zeros_like(x)

    basis_c, _ = span_basis(generator_coordinates(["rotate", Custom(), "saturate"]))
    assert basis_c == [0, 1, 2]


def test_stencil_tangent_matches_action():
    for name in list_actions():
        for stencil in ("paper", "central"):
            t = TangentOperator(get_action(name), stencil)
            for shape in ((2, 3, 5, 9),):
                x = torch.randn(shape, dtype=DT)
                ref = layout_tangent(get_action(name), x, Layout("NCHW"), stencil)
                torch.testing.assert_close(t(x, Layout("NCHW")), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "layout, shape",
    [(Layout("NCHW"), (2, 3, 5, 4)), (Layout("NHWC"), (2, 5, 4, 3)),
     (Layout.tokens(2, (5, 4)), (2, 22, 3))],
    ids=["NCHW", "NHWC", "tokens"],
)
def test_layout_tangents_stack_each_actions_tangent(layout, shape):
    x = torch.randn(shape, dtype=DT, generator=torch.Generator().manual_seed(3))
    acts = [get_action(a) for a in ALL]
    got = layout_tangents(acts, x, layout, "paper")
    assert got.shape == (len(acts), *shape)
    for k, a in enumerate(acts):
        ref = layout_tangent(a, x, layout, "paper")
        torch.testing.assert_close(got[k], ref, rtol=1e-12, atol=1e-12, msg=a.name)
    if layout.kind == "tokens":
        assert torch.equal(got[:, :, :2], torch.zeros_like(got[:, :, :2]))
        assert got[:, :, 2:].abs().amax() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_tangents_match_float32(dtype):
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    names = ["rotate", "scale", "saturate"]
    tau = tangents(x, names, stencil="paper")
    assert tau.dtype == dtype and torch.isfinite(tau).all()
    ref = tangents(x.float(), names, stencil="paper")
    torch.testing.assert_close(tau.float(), ref, rtol=1e-2, atol=1e-2)
    op = TangentOperator(get_action("rotate"), "paper")(x, Layout())
    assert op.dtype == dtype
    torch.testing.assert_close(op.float(), ref[0], rtol=1e-2, atol=1e-2)


def test_actions_must_be_a_non_empty_list():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(TypeError, match=r"write \['rotate'\]"):
        tangents(x, "rotate")
    with pytest.raises(ValueError, match="no actions"):
        tangents(x, [])
    with pytest.raises(TypeError, match="list of names"):
        generator_coordinates("scale")
    assert tangents(torch.zeros(0, 1, 4, 4), ["rotate"]).shape == (1, 0, 1, 4, 4)
