"""The Fashion-MNIST zoo: a controlled set of timm architectures trained with one recipe.

The zoo varies one factor at a time at an equal number of optimizer steps
(:data:`STEPS`, one epoch's worth of the 60,000 training images at batch 64):

- architecture: five CNN kinds (ResNet, ConvNeXt, MobileNetV3, MobileNetV2, DenseNet), two
  transformer kinds (ViT, DeiT with its distillation token) and three MLP kinds (MLP-Mixer,
  ResMLP, gMLP), grouped into the paper's three families ``cnn``, ``vit`` and ``mixer``;
- size: a ``small`` and a ``large`` variant of every kind (width or depth);
- training-set size: 60,000 images, and for the small variants also 2,000 and 8,000 (a
  seeded nested subset; the steps stay the same, so the smaller sets are seen many times);
- augmentation: none, and for the small variants also random shifts of up to 2 px.

Every entry is one ``timm.create_model(arch, in_chans=1, num_classes=10, **kwargs)`` call at
32 px (the MLP-Mixer kinds through timm's own factory on its ``MlpMixer`` class, whose entry
points fix patch size and depth). Classifier heads follow one rule across families
(:func:`create`): weights from a truncated normal with standard deviation 0.01 and zero
bias, drawn from the model's seed, so that the loss at initialisation is ln 10 for every
architecture (timm's own rule for EfficientNet/MobileNet heads, U(+-1/sqrt(fan_out)),
gives 2.9 to 7.3 with 10 classes).

Fashion-MNIST's 28 x 28 images are zero-padded to 32 x 32 and normalised with the training
set's mean and standard deviation: ``x = (pad(u / 255) - MEAN) / STD``. Checkpoints live in
a cache outside git (:func:`cache_dir`), one folder per model with a checkpoint per snapshot
step; ``python -m lielib.book.zoo_train`` trains them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .paths import NotAvailableError
from .paths import cache_dir as _cache

RUN_FILE = "run.json"
"""Beside a model's checkpoints, a copy of its results file: a lost results file is restored
from it, and :func:`load_trained` reads the final test accuracy from it."""

__all__ = [
    "BATCH_SIZE",
    "INPUT_SIZE",
    "MEAN",
    "SNAPSHOT_STEPS",
    "STD",
    "STEPS",
    "ZOO",
    "MissingCheckpointError",
    "ZooEntry",
    "cache_dir",
    "checkpoint_path",
    "create",
    "get_entry",
    "load_trained",
    "preprocess",
    "run_tag",
    "steps_for_passes",
    "zoo_names",
]

INPUT_SIZE = 32
MEAN = 0.2860
"""Mean pixel of the Fashion-MNIST training set (after scaling to [0, 1])."""
STD = 0.3530
"""Standard deviation of the Fashion-MNIST training pixels."""
BATCH_SIZE = 64
STEPS = 938
"""Optimizer steps for every model: ceil(60,000 / 64), one epoch of the full training set."""
SNAPSHOT_STEPS = (0, 47, 188, 469, STEPS)
"""Steps at which a checkpoint is kept (0, 5%, 20%, 50% and 100% of training)."""
HEAD_STD = 0.01


class MissingCheckpointError(NotAvailableError, FileNotFoundError):
    """A zoo model has no trained checkpoint; the message says how to train it."""


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: a timm architecture at 32 px and the factors of its training.

    Attributes:
        name: the zoo's name (also its checkpoint folder and results file name).
        arch: the timm architecture passed to ``timm.create_model``.
        family: ``"cnn"``, ``"vit"`` or ``"mixer"`` (the paper's Figure 1 groups).
        kind: the architecture kind (``"resnet"``, ``"vit"``, ``"gmlp"``, ...).
        size: ``"small"`` or ``"large"`` within its kind.
        kwargs: extra ``timm.create_model`` arguments (32 px patch sizes, widths, depths).
        n_train: training images (a seeded nested subset of the 60,000).
        augment: ``"none"`` or ``"shift"`` (random shifts of up to 2 px).
    """

    name: str
    arch: str
    family: str
    kind: str
    size: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    n_train: int = 60_000
    augment: str = "none"

    def model_kwargs(self) -> dict[str, Any]:
        """The ``timm.create_model`` keyword arguments."""
        return {"in_chans": 1, "num_classes": 10, **self.kwargs}

    @property
    def condition(self) -> str:
        """The training condition: ``"60k"``, ``"8k"``, ``"2k"``, or ``"60k+shift"``."""
        label = f"{self.n_train // 1000}k"
        return label if self.augment == "none" else f"{label}+{self.augment}"


def _vit(depth: int, **extra: Any) -> dict[str, Any]:
    return dict(img_size=32, patch_size=4, embed_dim=96, depth=depth, num_heads=3, **extra)


def _mixer(dim: int, blocks: int) -> dict[str, Any]:
    return {"img_size": 32, "patch_size": 4, "embed_dim": dim, "num_blocks": blocks}


# (kind, family, small (arch, kwargs), large (arch, kwargs))
_KINDS: tuple[tuple[str, str, tuple[str, dict], tuple[str, dict]], ...] = (
    ("resnet", "cnn", ("resnet10t", {}), ("resnet18", {})),
    ("convnext", "cnn", ("convnext_atto", {}), ("convnext_femto", {})),
    ("mobilenetv3", "cnn", ("mobilenetv3_small_050", {}), ("mobilenetv3_small_100", {})),
    ("mobilenetv2", "cnn", ("mobilenetv2_050", {}), ("mobilenetv2_100", {})),
    ("densenet", "cnn", ("densenet121", {"growth_rate": 12, "block_config": (3, 6, 12, 8)}),
     ("densenet121", {"growth_rate": 24, "block_config": (3, 6, 12, 8)})),
    ("vit", "vit", ("vit_tiny_patch16_224", _vit(4)), ("vit_tiny_patch16_224", _vit(8))),
    ("deit", "vit", ("deit_tiny_distilled_patch16_224", _vit(4)),
     ("deit_tiny_distilled_patch16_224", _vit(8))),
    ("mixer", "mixer", ("mixer_s16_224", _mixer(128, 4)), ("mixer_s16_224", _mixer(128, 8))),
    ("resmlp", "mixer", ("resmlp_12_224", _mixer(96, 4)), ("resmlp_12_224", _mixer(96, 8))),
    ("gmlp", "mixer", ("gmlp_ti16_224", _mixer(96, 4)), ("gmlp_ti16_224", _mixer(96, 8))),
)


def _build_zoo() -> tuple[ZooEntry, ...]:
    base, varied = [], []
    for kind, family, small, large in _KINDS:
        for size, (arch, kwargs) in (("small", small), ("large", large)):
            base.append(ZooEntry(f"{kind}-{size}", arch, family, kind, size, kwargs))
        arch, kwargs = small
        for n in (2_000, 8_000):
            varied.append(ZooEntry(f"{kind}-small-n{n // 1000}k", arch, family, kind, "small",
                                   kwargs, n_train=n))
        varied.append(ZooEntry(f"{kind}-small-shift", arch, family, kind, "small", kwargs,
                               augment="shift"))
    return (*base, *varied)


ZOO: tuple[ZooEntry, ...] = _build_zoo()
"""The zoo, in training order: every kind at both sizes first, then the varied factors."""

_BY_NAME = {e.name: e for e in ZOO}

# timm's MLP-Mixer entry points fix patch size, depth and width inside the function (passing
# them again is a TypeError), so these are built with timm's own factory from the class.
_MIXER_LAYERS: dict[str, dict[str, Any]] = {
    "mixer_s16_224": {},
    "resmlp_12_224": {"block_layer": "ResBlock", "norm_layer": "Affine", "mlp_ratio": 4},
    "gmlp_ti16_224": {"block_layer": "SpatialGatingBlock", "mlp_layer": "GatedMlp", "mlp_ratio": 6},
}


def _create_mixer(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    from timm.models import build_model_with_cfg, mlp_mixer

    layers = {k: getattr(mlp_mixer, v) if isinstance(v, str) else v
              for k, v in _MIXER_LAYERS[arch].items()}
    return build_model_with_cfg(mlp_mixer.MlpMixer, arch, False, **layers, **kwargs)


def steps_for_passes(n_train: int, passes: float) -> int:
    """Optimizer steps for ``passes`` epochs over ``n_train`` images at :data:`BATCH_SIZE`."""
    if not passes > 0:
        raise ValueError(f"passes must be positive, got {passes}")
    return max(1, math.ceil(passes * n_train / BATCH_SIZE))


def run_tag(seed: int = 0, passes: float | None = None) -> str:
    """The folder name of a zoo run: ``""`` for the zoo itself (seed 0, :data:`STEPS` steps),
    ``"seed1"`` for another training seed, ``"passes2-seed0"`` for an equal-passes run."""
    if passes is None:
        return "" if seed == 0 else f"seed{seed}"
    return f"passes{passes:g}-seed{seed}"


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


def _heads(model: nn.Module) -> list[nn.Linear]:
    heads = model.get_classifier()
    heads = heads if isinstance(heads, tuple | list) else (heads,)
    found = [h for h in heads if isinstance(h, nn.Linear)]
    if not found:
        raise TypeError(f"{type(model).__name__} has no linear classifier head: {heads}")
    return found


def create(entry: ZooEntry | str, *, seed: int = 0) -> nn.Module:
    """A freshly initialised zoo model, in training mode.

    timm's initialisation draws from the global RNG, so it runs inside
    ``torch.random.fork_rng()`` seeded with ``seed`` (the caller's RNG is untouched). Every
    classifier head is then re-drawn by one rule: ``W ~ N(0, 0.01^2)`` truncated at two
    standard deviations, ``b = 0``, from a generator seeded with ``seed``.
    """
    import timm

    entry = get_entry(entry) if isinstance(entry, str) else entry
    kwargs = entry.model_kwargs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if entry.arch in _MIXER_LAYERS:
            model = _create_mixer(entry.arch, kwargs)
        else:
            model = timm.create_model(entry.arch, pretrained=False, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in _heads(model):
            nn.init.trunc_normal_(head.weight, std=HEAD_STD, a=-2 * HEAD_STD, b=2 * HEAD_STD,
                                  generator=gen)
            if head.bias is not None:
                head.bias.zero_()
    return model


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` Fashion-MNIST -> float ``(N, 1, 32, 32)`` as the zoo is trained.

    ``x = (pad_2(u / 255) - MEAN) / STD``, padding two black pixels on every side.
    """
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images (N, H, W), got {images.dtype} {tuple(images.shape)}")
    pad = (INPUT_SIZE - images.shape[-1]) // 2
    x = images.float().div_(255.0).unsqueeze(1)
    x = F.pad(x, (pad, INPUT_SIZE - images.shape[-1] - pad, pad, INPUT_SIZE - images.shape[-2] - pad))
    return (x - MEAN) / STD


def cache_dir() -> Path:
    """The zoo's checkpoint folder: ``<cache>/zoo`` (see :func:`lielib.book.paths.cache_dir`)."""
    return _cache("zoo")


def checkpoint_path(name: str, *, step: int | None = None,
                    root: str | os.PathLike | None = None) -> Path:
    """Where zoo model ``name``'s checkpoint lives: trained (``step=None``) or at ``step``."""
    get_entry(name)
    if step is not None and (not isinstance(step, int) or step < 0):
        raise ValueError(f"step must be a non-negative int or None, got {step!r}")
    folder = (Path(root) if root is not None else cache_dir()) / name
    return folder / ("final.pt" if step is None else f"step{step:04d}.pt")


def load_trained(name: str, *, step: int | None = None, root: str | os.PathLike | None = None
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """Zoo model ``name``, trained (``step=None``) or at a kept snapshot, in eval mode.

    BatchNorm statistics in every snapshot were re-estimated on training images, so the
    step-0 snapshot is the function training starts from. Returns the model and its record.

    Raises:
        MissingCheckpointError: it was not trained yet; the message gives the command.
    """
    from .training import load_checkpoint

    path = checkpoint_path(name, step=step, root=root)
    if not path.is_file():
        raise MissingCheckpointError(
            f"no checkpoint {path.name} for zoo model {name!r} in {path.parent}. Train it with "
            f"`python -m lielib.book.zoo_train --only {name}` (or the whole zoo with "
            "`python -m lielib.book.zoo_train`); set LIELIB_CACHE to use another cache folder.")
    state = load_checkpoint(path)
    model = create(name, seed=int(state["record"]["seed"]))
    model.load_state_dict(state["model"])
    model.eval()
    record = dict(state["record"])
    run = path.parent / RUN_FILE
    if step is None and record.get("test_acc") is None and run.is_file():
        kept = json.loads(run.read_text())["record"]
        record.update({k: kept[k] for k in ("test_acc", "n_test") if k in kept})
    return model, record
