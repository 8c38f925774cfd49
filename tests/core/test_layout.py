import pytest
import torch

from lielib.layout import Layout, from_nchw, to_nchw


def test_nhwc_round_trip():
    x = torch.randn(2, 5, 6, 3)
    img, prefix = to_nchw(x, "NHWC")
    assert img.shape == (2, 3, 5, 6) and prefix is None
    assert torch.equal(img[:, 1, 2, 4], x[:, 2, 4, 1])
    assert torch.equal(from_nchw(img, prefix, "NHWC"), x)


def test_tokens_with_prefix_round_trip():
    layout = Layout.tokens(num_prefix_tokens=2, grid=(3, 4))
    x = torch.randn(2, 2 + 12, 7)
    img, prefix = to_nchw(x, layout)
    assert img.shape == (2, 7, 3, 4) and prefix.shape == (2, 2, 7)
    # row-major grid: token 2 + r*4 + c is pixel (r, c)
    assert torch.equal(img[:, :, 1, 3], x[:, 2 + 1 * 4 + 3])
    assert torch.equal(from_nchw(img, prefix, layout), x)


def test_nlc_infers_square_grid():
    img, prefix = to_nchw(torch.randn(1, 16, 3), "NLC")
    assert img.shape == (1, 3, 4, 4) and prefix is None


@pytest.mark.parametrize("spec", ["NCWH", "channels", ""])
def test_unknown_layout_raises(spec):
    with pytest.raises(ValueError, match="unknown layout"):
        Layout.parse(spec)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="square grid"):
        to_nchw(torch.randn(1, 15, 3), "NLC")
    with pytest.raises(ValueError, match="needs 12 spatial tokens"):
        to_nchw(torch.randn(1, 14, 3), Layout.tokens(1, (3, 4)))
    with pytest.raises(ValueError, match="4-d"):
        to_nchw(torch.randn(3, 4, 5), "NCHW")


@pytest.mark.parametrize("args", [(1.7,), (True,), (1, (4.0, 4)), (1, (4,)), (0, (0, 4))],
                         ids=["float-prefix", "bool-prefix", "float-grid", "short-grid", "empty-grid"])
def test_token_counts_must_be_integers(args):
    with pytest.raises(TypeError, match="must be"):
        Layout.tokens(*args)


def test_numpy_integers_are_integers():
    import numpy as np

    layout = Layout.tokens(np.int64(1), (np.int64(2), 3))
    assert layout == Layout.tokens(1, (2, 3)) and type(layout.num_prefix_tokens) is int
