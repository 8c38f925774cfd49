"""What defines one rotated-MNIST run: :class:`ExperimentConfig`, its presets and variants.

A variant is a model kind and a training condition: ``mae`` (the MAE-pretrained ViT),
``scratch`` (the same ViT from random initialisation) or ``cnn``, fine-tuned on the rotated
training digits; with ``+rot`` every training digit also gets a fresh random rotation
``U[0, 2 pi)`` each time it is seen; with ``+up`` (the upright control) the model is
fine-tuned on the same training digits left upright, the MNIST originals the rotated
digits were made from. Every variant is measured on the same rotated test digits.

Presets (:data:`PRESETS`):

* ``smoke``: seconds; for tests.
* ``cpu``: at most 15 minutes on one thread (5 measured): every variant, 6 epochs on 3,000 digits.
* ``full``: the book's run: all 12,000 training digits, 30 epochs per variant, LEE on
  256 test digits after every epoch, final accuracy on all 50,000 test digits.
* ``paper``: the paper's 100 fine-tuning epochs with a larger ViT, on a GPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

__all__ = ["BASES", "PRESETS", "SUFFIXES", "ExperimentConfig", "Variant", "parse_variant", "preset"]

BASES = ("mae", "scratch", "cnn")
ALL_VARIANTS = ("mae", "scratch", "cnn", "mae+rot", "scratch+rot", "cnn+rot")


SUFFIXES = {"": "the rotated training digits",
            "rot": "the rotated training digits, each turned by a fresh random angle when drawn",
            "up": "the same training digits upright (the MNIST originals of the rotated digits)"}
"""The training condition a variant's suffix names (``""``: no suffix)."""


class Variant(NamedTuple):
    """A parsed variant name: the model kind and its training condition.

    Attributes:
        base: ``"mae"``, ``"scratch"`` or ``"cnn"``.
        rotate: a fresh random rotation of every training digit each time it is drawn (``+rot``).
        upright: fine-tuned on the upright originals of the training digits (``+up``).
    """

    base: str
    rotate: bool
    upright: bool


def parse_variant(name: str) -> Variant:
    """``"mae+rot"`` -> ``Variant("mae", rotate=True, upright=False)``; ``ValueError`` for unknown names."""
    base, _, suffix = name.partition("+")
    if base not in BASES or suffix not in SUFFIXES:
        raise ValueError(f"unknown variant {name!r}; use one of {list(BASES)}, optionally with "
                         "'+rot' for random-rotation augmentation (e.g. 'mae+rot') or '+up' to "
                         "fine-tune on the same digits upright (e.g. 'mae+up')")
    return Variant(base, rotate=suffix == "rot", upright=suffix == "up")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one run; the defaults are the ``full`` preset.

    MAE recipe: half the patches masked, two decoder blocks of width 64, AdamW at 3e-3 for
    30 epochs on all 8,000 held-out digits; at one thread its training loss fell to 0.34 of
    the zero-prediction reference (0.120 against 0.352; 0.5 of it by epoch 11), where 75%
    masking at 2e-3 stood at 0.78 of it after 8 epochs.

    Sizes: ``train_size`` rotated training digits, ``eval_size`` test digits scored after
    every epoch, ``final_eval_size`` scored at the end, ``lee_size`` test digits measured
    after every epoch, ``pretrain_size`` upright held-out digits for the MAE.
    """

    seed: int = 0
    variants: tuple[str, ...] = ALL_VARIANTS
    train_size: int = 12_000
    eval_size: int = 5_000
    final_eval_size: int = 50_000
    lee_size: int = 256
    bn_size: int = 2_000
    pretrain_size: int = 8_000
    mae_epochs: int = 30
    mae_lr: float = 3e-3
    mae_batch_size: int = 128
    mask_ratio: float = 0.5
    decoder_dim: int = 64
    decoder_depth: int = 2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    warmup_epochs: int = 2
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    patch_size: int = 4
    cnn_width: int = 16
    n_resamples: int = 2_000
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in self.variants:
            parse_variant(name)
        for name in ("train_size", "eval_size", "final_eval_size", "lee_size", "pretrain_size",
                     "epochs", "mae_epochs", "batch_size", "mae_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size > self.train_size or self.mae_batch_size > self.pretrain_size:
            raise ValueError("a batch cannot be larger than its training set")

    @property
    def uses_mae(self) -> bool:
        """Whether any variant needs the pretrained encoder."""
        return any(parse_variant(v).base == "mae" for v in self.variants)

    def fingerprint(self) -> str:
        """A short hash of everything that changes what is trained (not the device, variants or sizes measured)."""
        skip = {"device", "variants", "eval_size", "final_eval_size", "lee_size", "n_resamples"}
        state = {k: v for k, v in asdict(self).items() if k not in skip}
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:10]

    def cli_args(self) -> list[str]:
        """The arguments of ``python -m lielib.book.rotated_mnist`` that rebuild this config."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            args += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
        return args


PRESETS: dict[str, dict] = {
    "smoke": {"variants": ("mae", "cnn+rot"), "train_size": 96, "eval_size": 64, "final_eval_size": 128,
                  "lee_size": 8, "bn_size": 64, "pretrain_size": 128, "mae_epochs": 2, "mae_batch_size": 32,
                  "decoder_dim": 16, "decoder_depth": 1, "epochs": 2, "batch_size": 32, "warmup_epochs": 1,
                  "embed_dim": 16, "depth": 1, "num_heads": 2, "cnn_width": 4, "n_resamples": 200},
    "cpu": {"train_size": 3_000, "eval_size": 2_000, "final_eval_size": 10_000, "lee_size": 128,
            "bn_size": 1_000, "pretrain_size": 8_000, "mae_epochs": 10, "epochs": 6,
            "warmup_epochs": 1},
    "full": {},
    "paper": {"epochs": 100, "warmup_epochs": 5, "mae_epochs": 200, "embed_dim": 192, "depth": 6,
                  "num_heads": 3, "decoder_dim": 128, "eval_size": 10_000, "device": "cuda"},
}
"""Overrides of :class:`ExperimentConfig` per preset (``full`` is the defaults)."""


def preset(name: str, **overrides) -> ExperimentConfig:
    """The config of preset ``name`` with ``overrides`` (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {list(PRESETS)}")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    if "variants" in values:
        values["variants"] = tuple(values["variants"])
    return replace(ExperimentConfig(), **values)
