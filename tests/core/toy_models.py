"""Seeded toy modules and small timm models shared by the layer-wise tests."""

from __future__ import annotations

import torch
from torch import nn

DT = torch.float64


def reinit(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded, non-degenerate parameters (timm zero-initialises some heads)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / p[0].numel() ** 0.5)
            else:
                base = 1.0 if name.endswith(("weight", "gamma")) else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def image(b=1, s=16, c=3, seed=1):
    return torch.randn(b, c, s, s, dtype=DT, generator=torch.Generator().manual_seed(seed))


def toy(inplace=True, bias=True):
    return reinit(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.ReLU(inplace=inplace),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=bias), nn.BatchNorm2d(8), nn.GELU(),
        nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).to(DT))


class PosToy(nn.Module):
    """conv -> functional add of a fixed pattern -> conv -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 4, 16, 16))
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.Tanh()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv2(self.conv(x) + self.pos))))


def timm_model(name):
    """A small timm model in float64 with seeded, non-degenerate parameters."""
    import timm

    if name == "mixer":
        from timm.models.mlp_mixer import MlpMixer

        model = MlpMixer(num_classes=7, img_size=32, patch_size=8, num_blocks=2, embed_dim=16)
    elif name == "swin":
        model = timm.create_model("swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1),
                                  num_heads=(1, 2), embed_dim=16, num_classes=7)
    elif name == "test_vit":
        model = timm.create_model(name, num_classes=7, img_size=32, depth=2)
    else:
        model = timm.create_model(name, num_classes=7)
    return reinit(model.to(DT))
