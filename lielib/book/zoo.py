"""The mini-zoo: timm architectures scaled to 32 px Fashion-MNIST, and where their weights live.

Every entry is one ``timm.create_model(arch, in_chans=1, num_classes=10, **kwargs)`` call
(for the MLP-Mixer family, whose timm entry points do not accept a patch size, the same
timm factory, ``build_model_with_cfg``, on timm's ``MlpMixer`` class) with ``kwargs`` scaled
to 32 x 32 inputs (patch sizes 2-16, narrow and shallow ViTs and
Mixers), a coarse ``family`` (``cnn``, ``vit``, ``mixer``) as in the paper's Figure 1, and
a training ``budget`` (subset size and epochs). ``full_kwargs`` keeps the paper-scale
architecture (timm's own widths and depths, still at 32 px) and :data:`FULL_BUDGET` the
paper-scale budget; ``python -m lielib.book.train --zoo --scale full`` trains those on a GPU.

Fashion-MNIST's 28 x 28 images are zero-padded to 32 x 32 (the background is black, so
padding adds background) and normalised with the training set's mean and standard
deviation: ``x = (pad(u / 255) - MEAN) / STD``. Checkpoints live in a cache outside git:
``$LIELIB_CACHE/zoo/`` if ``LIELIB_CACHE`` is set, else ``<repo>/cache/zoo/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BUDGETS",
    "FULL_BUDGET",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "ZOO",
    "Budget",
    "MissingCheckpointError",
    "ZooEntry",
    "cache_dir",
    "checkpoint_path",
    "create",
    "get_entry",
    "load_trained",
    "preprocess",
    "zoo_names",
]

ROOT = Path(__file__).resolve().parents[2]
INPUT_SIZE = 32
MEAN = 0.2860
"""Mean pixel of the Fashion-MNIST training set (after scaling to [0, 1])."""
STD = 0.3530
"""Standard deviation of the Fashion-MNIST training pixels."""


class MissingCheckpointError(FileNotFoundError):
    """A zoo model has no trained checkpoint; the message says how to train it."""


@dataclass(frozen=True)
class Budget:
    """A training budget: ``n_train`` seeded training images for ``epochs`` epochs."""

    name: str
    n_train: int
    epochs: int


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget("xs", 500, 1),
        Budget("s", 1_200, 1),
        Budget("m", 2_500, 1),
        Budget("l", 5_000, 1),
        Budget("xl", 8_000, 1),
    )
}
"""The CPU budgets; spread so that test accuracy spreads (about 50% to 85%)."""
FULL_BUDGET = Budget("full", 60_000, 30)
"""The paper-scale budget: the whole training set, 30 epochs."""


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: a timm architecture, its 32 px kwargs, family and budget.

    Attributes:
        name: the zoo's name for the model (also its checkpoint and results file name).
        arch: the timm architecture passed to ``timm.create_model``.
        family: ``"cnn"``, ``"vit"`` or ``"mixer"``.
        kwargs: the mini (CPU) architecture at 32 px.
        budget: the name of its CPU budget in :data:`BUDGETS`.
        full_kwargs: the paper-scale architecture at 32 px (timm's widths and depths).
        lr: the AdamW peak learning rate of the shared recipe for this entry.
    """

    name: str
    arch: str
    family: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    budget: str = "m"
    full_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 2e-3

    def model_kwargs(self, scale: str = "mini") -> dict[str, Any]:
        """The ``timm.create_model`` keyword arguments for ``scale`` (``mini`` or ``full``)."""
        if scale not in ("mini", "full"):
            raise ValueError(f"unknown scale {scale!r}; use 'mini' or 'full'")
        extra = self.kwargs if scale == "mini" else self.full_kwargs
        return {"in_chans": 1, "num_classes": 10, **extra}

    def budget_for(self, scale: str = "mini") -> Budget:
        """The training budget for ``scale``."""
        return BUDGETS[self.budget] if scale == "mini" else FULL_BUDGET


def _vit(patch: int, dim: int, depth: int, heads: int, **extra: Any) -> dict[str, Any]:
    return dict(img_size=32, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, **extra)


def _mixer(patch: int, dim: int, blocks: int, **extra: Any) -> dict[str, Any]:
    return dict(img_size=32, patch_size=patch, embed_dim=dim, num_blocks=blocks, **extra)


ZOO: tuple[ZooEntry, ...] = (
    # CNNs: ResNet, ConvNeXt, EfficientNet / MobileNet, DenseNet.
    ZooEntry("resnet18", "resnet18", "cnn", {}, "xl", {}),
    ZooEntry("resnet10t", "resnet10t", "cnn", {}, "m", {}),
    ZooEntry("resnet18-xs", "resnet18", "cnn", {}, "xs", {}),
    ZooEntry("convnext_atto", "convnext_atto", "cnn", {}, "m", {}),
    ZooEntry("convnext_femto", "convnext_femto", "cnn", {}, "xs", {}),
    ZooEntry("efficientnet_b0", "efficientnet_b0", "cnn", {}, "l", {}, lr=5e-4),
    ZooEntry("mobilenetv3_small", "mobilenetv3_small_100", "cnn", {}, "m", {}),
    ZooEntry("mobilenetv2_050", "mobilenetv2_050", "cnn", {}, "l", {}),
    ZooEntry(
        "densenet_small",
        "densenet121",
        "cnn",
        {"growth_rate": 12, "block_config": (3, 6, 12, 8)},
        "s",
        {},
    ),
    # ViTs and DeiTs, patch sizes 2, 4, 8 and 16 on 32 px images.
    ZooEntry("vit_p4", "vit_tiny_patch16_224", "vit", _vit(4, 96, 4, 3), "xl",
             _vit(4, 192, 12, 3), lr=1e-3),
    ZooEntry("vit_p8", "vit_tiny_patch16_224", "vit", _vit(8, 128, 4, 4), "l",
             _vit(8, 192, 12, 3), lr=1e-3),
    ZooEntry("vit_p16", "vit_tiny_patch16_224", "vit", _vit(16, 128, 4, 4), "m",
             _vit(16, 192, 12, 3), lr=1e-3),
    ZooEntry("vit_p2", "vit_tiny_patch16_224", "vit", _vit(2, 48, 2, 3), "l",
             _vit(2, 192, 12, 3), lr=1e-3),
    ZooEntry("vit_p4_gap", "vit_small_patch16_224", "vit",
             _vit(4, 96, 4, 4, class_token=False, global_pool="avg"), "l",
             _vit(4, 384, 12, 6, class_token=False, global_pool="avg"), lr=1e-3),
    ZooEntry("deit_p4", "deit_tiny_distilled_patch16_224", "vit", _vit(4, 96, 4, 3), "l",
             _vit(4, 192, 12, 3), lr=1e-3),
    # MLP-Mixer, ResMLP and gMLP.
    ZooEntry("mixer_p4", "mixer_s16_224", "mixer", _mixer(4, 96, 4), "m", _mixer(4, 512, 8)),
    ZooEntry("mixer_p8", "mixer_s16_224", "mixer", _mixer(8, 192, 4), "m", _mixer(8, 512, 8)),
    ZooEntry("resmlp_p4", "resmlp_12_224", "mixer", _mixer(4, 96, 4), "l", _mixer(4, 384, 12)),
    ZooEntry("gmlp_p4", "gmlp_ti16_224", "mixer", _mixer(4, 96, 4), "m", _mixer(4, 128, 30)),
)
"""The zoo, in training order."""

_BY_NAME = {e.name: e for e in ZOO}


# timm's MLP-Mixer entry points fix patch size, depth and width inside the function (passing
# them again is a TypeError), so these are built with timm's own factory from the class.
_MIXER_LAYERS: dict[str, dict[str, str]] = {
    "mixer_s16_224": {},
    "resmlp_12_224": {"block_layer": "ResBlock", "norm_layer": "Affine", "mlp_ratio": 4},
    "gmlp_ti16_224": {"block_layer": "SpatialGatingBlock", "mlp_layer": "GatedMlp", "mlp_ratio": 6},
}


def _create_mixer(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    from timm.models import build_model_with_cfg, mlp_mixer

    layers = {
        k: getattr(mlp_mixer, v) if isinstance(v, str) else v
        for k, v in _MIXER_LAYERS[arch].items()
    }
    return build_model_with_cfg(mlp_mixer.MlpMixer, arch, False, **layers, **kwargs)


def zoo_names() -> list[str]:
    """The names of the zoo's models, in order."""
    return [e.name for e in ZOO]


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``.

    Raises:
        KeyError: no such entry; the message lists the zoo.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; the zoo has: {', '.join(_BY_NAME)}") from None


def create(entry: ZooEntry | str, *, scale: str = "mini", seed: int | None = 0) -> nn.Module:
    """A freshly initialised zoo model (seeded when ``seed`` is not ``None``).

    Zero-initialised heads (MLP-Mixer, ResMLP, gMLP) would make every Lie derivative at
    initialisation exactly 0, so a head that is all zeros is re-drawn from the seeded
    generator with a small normal init (std 0.02, timm's usual) before training starts.
    """
    import timm

    entry = get_entry(entry) if isinstance(entry, str) else entry
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = entry.model_kwargs(scale)
    if entry.arch in _MIXER_LAYERS:
        model = _create_mixer(entry.arch, kwargs)
    else:
        model = timm.create_model(entry.arch, pretrained=False, **kwargs)
    head = model.get_classifier()
    if isinstance(head, nn.Linear) and not head.weight.detach().any():
        with torch.no_grad():
            head.weight.normal_(0.0, 0.02)
    return model


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` Fashion-MNIST -> float ``(N, 1, 32, 32)`` as the zoo was trained.

    ``x = (pad_2(u / 255) - MEAN) / STD``, padding two black pixels on every side.
    """
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
    pad = (INPUT_SIZE - images.shape[-1]) // 2
    x = images.float().div_(255.0).unsqueeze(1)
    x = F.pad(x, (pad, INPUT_SIZE - images.shape[-1] - pad, pad, INPUT_SIZE - images.shape[-2] - pad))
    return (x - MEAN) / STD


def cache_dir() -> Path:
    """The zoo's checkpoint folder: ``$LIELIB_CACHE/zoo`` or ``<repo>/cache/zoo``."""
    base = os.environ.get("LIELIB_CACHE")
    return (Path(base).expanduser() if base else ROOT / "cache") / "zoo"


def checkpoint_path(name: str, *, scale: str = "mini", root: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint of zoo model ``name`` lives (it need not exist)."""
    get_entry(name)
    folder = Path(root) if root is not None else cache_dir()
    suffix = "" if scale == "mini" else f"-{scale}"
    return folder / f"{name}{suffix}.pt"


def load_trained(
    name: str, *, scale: str = "mini", root: str | os.PathLike | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained zoo model ``name`` in eval mode, and its training record.

    Raises:
        MissingCheckpointError: it was not trained yet; the message gives the command.
    """
    path = checkpoint_path(name, scale=scale, root=root)
    if not path.is_file():
        flag = "" if scale == "mini" else f" --scale {scale}"
        raise MissingCheckpointError(
            f"no checkpoint for zoo model {name!r} at {path}. Train it with "
            f"`python -m lielib.book.train --zoo --only {name}{flag}` (or the whole zoo with "
            f"`python -m lielib.book.train --zoo{flag}`); set LIELIB_CACHE to use another cache folder."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = create(name, scale=scale, seed=None)
    model.load_state_dict(state["model"])
    model.eval()
    return model, dict(state["record"])
