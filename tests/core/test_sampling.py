import pytest
import torch
import torch.nn.functional as F

from lielib.actions import get_action
from lielib.sampling import affine_sample, paper_cells


@pytest.mark.parametrize("stencil", ["paper", "central"])
@pytest.mark.parametrize("name", ["rotate", "scale", "shear_x", "hyperbolic_rotate", "translate_y"])
@pytest.mark.parametrize("t", [0.37, -1.3, 2.9])
def test_values_match_grid_sample(name, t, stencil):
    x = torch.randn(2, 3, 9, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theta = get_action(name).theta(torch.full((2,), t, dtype=torch.float64))
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    torch.testing.assert_close(affine_sample(x, theta, stencil=stencil), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("size", "flipped"), [(224, 36), (28, 3), (32, 0)])
def test_paper_stencil_flips_where_float32_rounds_down(size, flipped):
    """The paper's float32 affine_grid puts some pixel centres just below an integer."""
    identity = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])
    cell_x, cell_y = paper_cells(identity, size, size)
    cols = torch.arange(size, dtype=cell_x.dtype)
    assert int((cell_x[0, 0] != cols).sum()) == flipped
    assert torch.equal(cell_x[0, 0], cell_y[0, :, 0])


def test_unknown_stencil_raises():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="unknown stencil"):
        get_action("rotate").act(x, 0.1, stencil="forward")


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")  # the reference warns, lielib must not
@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 1)])
def test_unit_size_axes_match_grid_sample(shape):
    x = torch.randn(1, 2, *shape, dtype=torch.float64)
    theta = get_action("rotate").theta(torch.tensor([0.4], dtype=torch.float64))
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    for stencil in ("paper", "central"):
        torch.testing.assert_close(affine_sample(x, theta, stencil=stencil), ref, atol=1e-12, rtol=0)


def test_half_precision_resamples_in_float32():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 9, generator=gen).bfloat16()
    theta = get_action("rotate").theta(torch.tensor([0.3, -0.2]))
    out = affine_sample(x, theta.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = affine_sample(x.float(), theta.bfloat16().float())
    torch.testing.assert_close(out, ref.bfloat16(), rtol=0, atol=0)


@pytest.mark.parametrize(
    "img, theta, match",
    [
        (torch.zeros(2, 3, 4, 4), torch.zeros(3, 2, 3), r"\(2, 2, 3\)"),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 3), r"\(2, 2, 3\)"),
        (torch.zeros(3, 4, 4), torch.zeros(2, 2, 3), r"\(B, C, H, W\)"),
        (torch.zeros(2, 3, 0, 4), torch.zeros(2, 2, 3), "no pixels"),
    ],
    ids=["batch-mismatch", "not-2x3", "3d-image", "no-pixels"],
)
def test_affine_sample_bad_arguments(img, theta, match):
    with pytest.raises(ValueError, match=match):
        affine_sample(img, theta)


def test_empty_batch_and_grid_sizes():
    assert affine_sample(torch.zeros(0, 1, 3, 3), torch.zeros(0, 2, 3)).shape == (0, 1, 3, 3)
    from lielib.sampling import normalized_grid

    with pytest.raises(ValueError, match="positive integer"):
        normalized_grid(0, 3, dtype=torch.float32)
