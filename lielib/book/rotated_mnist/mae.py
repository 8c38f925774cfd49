"""A small masked-autoencoder ViT, fine-tuned on rotated MNIST while its equivariance is tracked.

The paper (Gruver et al., 2023) fine-tunes an MAE-pretrained ViT on rotated MNIST
and watches the rotation Lie derivative fall as the model learns the symmetry from data.
No pretrained MAE can be downloaded here, so this module pretrains its own on upright
MNIST digits that are disjoint from the rotated test set (see :mod:`lielib.book.rotated_mnist.data`).

* Encoder: a timm ``VisionTransformer`` (patch 4 at 28 px, one class token, average
  pooling over patch tokens), attention unfused so that ``torch.func`` can differentiate it.
* MAE (He et al., 2022): 75% of the patches masked at random, a light decoder, loss
  ``mean_{masked p} ||pred_p - (x_p - mean(x_p)) / std(x_p)||^2 / (p^2 C)``.
* Variants fine-tuned on rotated MNIST: ``mae`` (pretrained encoder + head), ``scratch``
  (the same ViT from random init) and ``cnn`` (a small CNN); a ``+rot`` suffix adds
  random-rotation augmentation. At epoch 0 (before training) and after every epoch:
  accuracy on a fixed test subset and :func:`lielib.lee` (softmax, mean |L p_c|) for
  rotate / translate_x / translate_y on a fixed smaller subset.

The whole experiment, with the layer-wise decomposition (``lielib.decompose.layerwise_lee``,
when importable) at the start and the end, is :func:`run_experiment`; its command line is
``python -m lielib.book.rotated_mnist.mae`` (``--help``; ``--preset paper`` for the paper's scale on a GPU),
which writes ``results/rotated_mnist/``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ...lie import lee
from ..results import ROOT, metadata, write_table
from .data import (
    ROTATED_MNIST_SIZES,
    load_pretraining_digits,
    load_rotated_mnist,
    rotate_digits,
)

__all__ = [
    "LEE_ACTIONS",
    "MAE",
    "PAPER_SCALE",
    "ExperimentConfig",
    "accuracy",
    "finetune",
    "layerwise_rotation",
    "mae_loss",
    "main",
    "measure_lee",
    "patchify",
    "pretrain_mae",
    "run_experiment",
    "run_layerwise",
    "small_cnn",
    "small_vit",
]

LEE_ACTIONS = ("rotate", "translate_x", "translate_y")


def small_vit(
    *,
    embed_dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    mlp_ratio: float = 2.0,
    patch_size: int = 4,
    img_size: int = 28,
    num_classes: int = 10,
) -> VisionTransformer:
    """A small timm ViT for ``(B, 1, 28, 28)`` digits: class token, average pooling, unfused attention.

    ``global_pool="avg", fc_norm=False`` keeps the final ``norm`` that MAE pretraining
    trains, so the pretrained encoder and the classifier share every layer but the head.
    """
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    model = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=1,
        num_classes=num_classes,
        global_pool="avg",
        fc_norm=False,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
    )
    for m in model.modules():
        if isinstance(getattr(m, "fused_attn", None), bool):
            m.fused_attn = False
    return model


def small_cnn(*, width: int = 16, num_classes: int = 10) -> nn.Sequential:
    """A small CNN baseline: three conv-BN-ReLU stages (two 2x max-pools), global average pool."""
    w = width

    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *stage(1, w),
        nn.MaxPool2d(2),
        *stage(w, 2 * w),
        nn.MaxPool2d(2),
        *stage(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, num_classes),
    )


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, L, p*p*C)``, patches in row-major grid order (as timm's PatchEmbed)."""
    b, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not divisible into {p}x{p} patches")
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def mae_loss(pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor, p: int) -> torch.Tensor:
    """MAE loss on normalised pixels of the masked patches.

    ``sum_l mask_l * mean_k (pred_lk - (x_lk - mu_l) / sqrt(var_l + 1e-6))^2 / sum_l mask_l``.

    Args:
        pred: ``(B, L, p*p*C)`` reconstructions.
        imgs: ``(B, C, H, W)`` originals.
        mask: ``(B, L)``, 1 for masked (reconstructed) patches, 0 for visible ones.
    """
    target = patchify(imgs, p)
    mu, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    target = (target - mu) / (var + 1e-6).sqrt()
    per_patch = (pred - target).square().mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


class MAE(nn.Module):
    """Masked autoencoder around a timm ViT encoder with a light transformer decoder.

    The encoder sees only the visible ``(1 - mask_ratio)`` share of patch tokens (plus
    its class token); the decoder fills the rest with a learned mask token, adds its own
    positional embedding and predicts each patch's normalised pixels.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        *,
        decoder_dim: int = 48,
        decoder_depth: int = 1,
        decoder_heads: int = 4,
        mask_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if encoder.num_prefix_tokens != 1 or encoder.cls_token is None or encoder.no_embed_class:
            raise ValueError(
                "MAE expects a ViT with exactly one class token embedded with pos_embed"
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.patch = encoder.patch_embed.patch_size[0]
        num_patches = encoder.patch_embed.num_patches
        in_chans = encoder.patch_embed.proj.in_channels
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_dim))
        self.decoder_blocks = nn.Sequential(
            *(Block(decoder_dim, decoder_heads, mlp_ratio=2.0) for _ in range(decoder_depth))
        )
        for m in self.decoder_blocks.modules():
            if isinstance(getattr(m, "fused_attn", None), bool):
                m.fused_attn = False
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch**2 * in_chans)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.decoder_pos, std=0.02)

    def _encode(self, imgs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.patch_embed(imgs) + enc.pos_embed[:, 1:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(len(x), -1, -1)
        x = enc.norm_pre(torch.cat([cls, x], 1))
        return enc.norm(enc.blocks(x))

    def forward(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask, encode, decode.

        Args:
            imgs: ``(B, C, H, W)``.
            generator: for the random masks (seeded runs).

        Returns:
            ``(loss, pred (B, L, p*p*C), mask (B, L))``.
        """
        b = len(imgs)
        num = self.encoder.patch_embed.num_patches
        n_keep = max(1, round(num * (1 - self.mask_ratio)))
        noise = torch.rand(b, num, generator=generator, device=imgs.device)
        order = noise.argsort(1)
        restore = order.argsort(1)
        mask = torch.ones(b, num, device=imgs.device)
        mask[:, :n_keep] = 0
        mask = torch.gather(mask, 1, restore)
        latent = self.decoder_embed(self._encode(imgs, order[:, :n_keep]))
        fill = self.mask_token.expand(b, num - n_keep, -1)
        tokens = torch.cat([latent[:, 1:], fill], 1)
        tokens = torch.gather(tokens, 1, restore[..., None].expand(-1, -1, tokens.shape[-1]))
        x = torch.cat([latent[:, :1], tokens], 1) + self.decoder_pos
        pred = self.decoder_pred(self.decoder_norm(self.decoder_blocks(x)))[:, 1:]
        return mae_loss(pred, imgs, mask, self.patch), pred, mask


def _schedule(
    opt: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


def pretrain_mae(
    mae: MAE,
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1.5e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Pretrain ``mae`` in place on ``images`` ``(N, 1, H, W)``; AdamW, warm-up + cosine.

    Returns:
        One row per epoch: ``epoch``, ``loss`` (mean training loss), ``seconds``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    gen = torch.Generator().manual_seed(seed)
    dev = next(mae.parameters()).device
    opt = torch.optim.AdamW(mae.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = _schedule(opt, steps, max(1, steps // 20))
    rows = []
    mae.train()
    for epoch in range(1, epochs + 1):
        start, total, count = time.perf_counter(), 0.0, 0
        for idx in _batches(len(images), batch_size, gen):
            x = images[idx].to(dev)
            loss, _, _ = mae(x, generator=gen if dev.type == "cpu" else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        rows.append({"epoch": epoch, "loss": total / count, "seconds": time.perf_counter() - start})
        if log:
            log(
                f"mae epoch {epoch}/{epochs}: loss {total / count:.4f} ({rows[-1]['seconds']:.1f} s)"
            )
    mae.eval()
    return pd.DataFrame(rows)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (in eval mode, restored afterwards) on ``(x, y)``."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (
            (model(x[i : i + batch_size].to(dev)).argmax(-1).cpu() == y[i : i + batch_size])
            .sum()
            .item()
        )
    model.train(was)
    return correct / len(x)


def measure_lee(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Mean LEE over ``x`` for :data:`LEE_ACTIONS`: ``mean_x mean_c |L_G softmax(f(x))_c|``.

    Returns:
        ``{"lee_rotate", "lee_translate_x", "lee_translate_y", "lee_translate"}``, the last
        the mean of the two translations.
    """
    dev = next(model.parameters()).device
    frames = [
        lee(model, x[i : i + batch_size].to(dev), list(LEE_ACTIONS))
        for i in range(0, len(x), batch_size)
    ]
    mean = pd.concat(frames).mean()
    out = {f"lee_{a}": float(mean[a]) for a in LEE_ACTIONS}
    out["lee_translate"] = 0.5 * (out["lee_translate_x"] + out["lee_translate_y"])
    return out


def finetune(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    lee_images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    augment: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Train a classifier in place on ``train``, measuring it at epoch 0 and after each epoch.

    Cross-entropy, AdamW, one epoch of linear warm-up then cosine decay. With ``augment``
    each training digit is rotated further by a fresh angle ``U[0, 2 pi)`` every time it
    is seen.

    Args:
        model: ``(B, 1, 28, 28) -> (B, 10)`` logits.
        train: ``(images (N, 1, 28, 28), labels (N,))``.
        test: the fixed evaluation subset for accuracy.
        lee_images: the fixed (smaller) subset for the Lie derivatives.

    Returns:
        One row per epoch ``0..epochs``: ``epoch``, ``accuracy``, ``lee_rotate``,
        ``lee_translate``, ``lee_translate_x``, ``lee_translate_y``, ``train_loss``
        (NaN at epoch 0), ``seconds`` (training time of that epoch).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    x_train, y_train = train
    gen = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    per_epoch = math.ceil(len(x_train) / batch_size)
    sched = _schedule(opt, epochs * per_epoch, per_epoch)

    def row(epoch: int, loss: float, seconds: float) -> dict:
        r = {"epoch": epoch, "accuracy": accuracy(model, *test), **measure_lee(model, lee_images)}
        r.update(train_loss=loss, seconds=seconds)
        if log:
            log(
                f"epoch {epoch}/{epochs}: acc {r['accuracy']:.4f} lee_rotate {r['lee_rotate']:.4g} "
                f"lee_translate {r['lee_translate']:.4g} loss {loss:.4f} ({seconds:.1f} s)"
            )
        return r

    rows = [row(0, float("nan"), 0.0)]
    for epoch in range(1, epochs + 1):
        model.train()
        start, total = time.perf_counter(), 0.0
        for idx in _batches(len(x_train), batch_size, gen):
            x = x_train[idx]
            if augment:
                x = rotate_digits(
                    x, torch.rand(len(x), generator=gen, dtype=torch.float64) * 2 * math.pi
                )
            loss = F.cross_entropy(model(x.to(dev)), y_train[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        model.eval()
        rows.append(row(epoch, total / len(x_train), time.perf_counter() - start))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- experiment


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one run of the rotated-MNIST experiment.

    The defaults are the CPU preset (about 10 CPU-minutes on one thread); :data:`PAPER_SCALE`
    holds the overrides for the paper's scale on a GPU (100 fine-tuning epochs).
    """

    seed: int = 0
    variants: tuple[str, ...] = ("mae", "scratch", "cnn")
    train_size: int = 6000
    eval_size: int = 2000
    lee_size: int = 64
    layerwise_size: int = 8
    pretrain_size: int = 8000
    mae_epochs: int = 8
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    mae_lr: float = 1.5e-3
    mask_ratio: float = 0.75
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    patch_size: int = 4
    decoder_dim: int = 48
    decoder_depth: int = 1
    cnn_width: int = 16
    device: str = "cpu"

    def cli_args(self) -> list[str]:
        """The command-line arguments of ``python -m lielib.book.rotated_mnist.mae`` that rebuild this config."""
        args = []
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            args += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
        return args


PAPER_SCALE = {
    "train_size": 12_000,
    "eval_size": 50_000,
    "lee_size": 256,
    "layerwise_size": 32,
    "pretrain_size": 8_000,
    "mae_epochs": 200,
    "epochs": 100,
    "embed_dim": 192,
    "depth": 6,
    "num_heads": 3,
    "decoder_dim": 128,
    "decoder_depth": 2,
    "variants": ("mae", "scratch", "cnn", "mae+rot"),
    "device": "cuda",
}
"""Overrides for the paper's scale (100 fine-tuning epochs, the full test split) on a GPU."""

VARIANTS = ("mae", "scratch", "cnn")


def _parse_variant(name: str) -> tuple[str, bool]:
    base, _, suffix = name.partition("+")
    if base not in VARIANTS or suffix not in ("", "rot"):
        raise ValueError(
            f"unknown variant {name!r}; use one of {list(VARIANTS)}, optionally with '+rot' "
            "for random-rotation augmentation (e.g. 'mae+rot')"
        )
    return base, suffix == "rot"


def layerwise_rotation(model: nn.Module, x: torch.Tensor) -> tuple[pd.DataFrame | None, str]:
    """Layer-wise rotation decomposition, mean over images, if :mod:`lielib.decompose` exists.

    Calls ``lielib.decompose.layerwise_lee(model, x, "rotate", method="exact")``.

    Returns:
        ``(frame, status)``: one row per module (``module``, ``module_type``,
        ``layer_kind``, ``order``, ``value``) and ``"computed"``; or ``(None, reason)``
        when the layer-wise API is not importable.
    """
    try:
        from ...decompose import layerwise_lee
    except ImportError as err:
        return None, f"unavailable: lielib.decompose.layerwise_lee could not be imported ({err})"
    frame = layerwise_lee(model, x, "rotate", method="exact")
    keys = [c for c in ("module", "module_type", "layer_kind", "order") if c in frame.columns]
    out = frame.groupby(keys, sort=False, dropna=False)["value"].mean().reset_index()
    return out.sort_values("order") if "order" in out.columns else out, "computed"


def _build(cfg: ExperimentConfig, base: str) -> nn.Module:
    torch.manual_seed(cfg.seed)
    if base == "cnn":
        return small_cnn(width=cfg.cnn_width)
    return small_vit(
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
    )


def _command(cfg: ExperimentConfig, out_dir: Path, *extra: str) -> str:
    args = ["python", "-m", "lielib.book.rotated_mnist.mae", *cfg.cli_args(), *extra]
    if out_dir.resolve() != (ROOT / "results" / "rotated_mnist").resolve():
        args += ["--out", str(out_dir)]
    return shlex.join(args)


def _meta(cfg: ExperimentConfig, command: str, **extra) -> dict:
    return metadata(
        command=command,
        seed=cfg.seed,
        device=cfg.device,
        config=asdict(cfg),
        sizes={
            "train": cfg.train_size,
            "eval": cfg.eval_size,
            "lee": cfg.lee_size,
            "layerwise": cfg.layerwise_size,
            "pretrain": cfg.pretrain_size,
            "full_splits": ROTATED_MNIST_SIZES,
        },
        epochs=cfg.epochs,
        mae_epochs=cfg.mae_epochs,
        threads=torch.get_num_threads(),
        dataset="rotated MNIST rebuilt by lielib.book.rotated_mnist.data (not the original files)",
        **extra,
    )


def _cache(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else ROOT / "cache" / "rotated_mnist"


def run_layerwise(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[Path | None, str]:
    """Layer-wise rotation decomposition of every variant at the start and the end.

    Reads the weights that :func:`run_experiment` saved in ``cache_dir`` and measures
    them on the first ``cfg.layerwise_size`` rotated test digits; writes
    ``layerwise.csv`` (variant, stage, module, module_type, layer_kind, order, value).

    Returns:
        ``(path or None, status)``; ``None`` when :mod:`lielib.decompose` is unavailable.
    """
    out_dir, cache, say = Path(out_dir), _cache(cache_dir), log or (lambda _msg: None)
    dev = torch.device(cfg.device)
    x = load_rotated_mnist("test", seed=cfg.seed, size=cfg.layerwise_size).images.to(dev)
    rows, status, t0 = [], "not run", time.perf_counter()
    for name in cfg.variants:
        base, _ = _parse_variant(name)
        for stage in ("start", "end"):
            path = cache / f"{name}_{stage}.pt"
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing: run the experiment first (python -m lielib.book.rotated_mnist.mae ...) "
                    "with the same --cache"
                )
            model = _build(cfg, base)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            frame, status = layerwise_rotation(model.to(dev), x)
            say(f"layer-wise {name} ({stage}): {status}")
            if frame is None:
                return None, status
            rows.append(frame.assign(variant=name, stage=stage))
    table = pd.concat(rows, ignore_index=True)
    table = table[
        ["variant", "stage", *[c for c in table.columns if c not in ("variant", "stage")]]
    ]
    command = command or _command(cfg, out_dir, "--layerwise-only")
    meta = _meta(cfg, command, seconds={"layerwise": time.perf_counter() - t0})
    return write_table(out_dir / "layerwise.csv", table, meta), status


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Path]:
    """Pretrain the MAE, fine-tune every variant, measure, and write the results files.

    Writes under ``out_dir``, each with its metadata: ``mae_pretraining.csv`` (loss per
    epoch), ``epochs.csv`` (one row per variant and epoch: accuracy, ``lee_rotate``,
    ``lee_translate``, ...; rewritten after every variant) and, when :mod:`lielib.decompose`
    is importable, ``layerwise.csv`` (see :func:`run_layerwise`). Weights at the start and
    the end of fine-tuning go to ``cache_dir`` (default ``<repo>/cache/rotated_mnist``,
    ignored by git).

    Returns:
        The paths written, by name.
    """
    variants = [(v, *_parse_variant(v)) for v in cfg.variants]
    out_dir, cache, say = Path(out_dir), _cache(cache_dir), log or (lambda _msg: None)
    dev = torch.device(cfg.device)
    t0, cpu0 = time.perf_counter(), time.process_time()
    train = load_rotated_mnist("train", seed=cfg.seed, size=cfg.train_size)
    test = load_rotated_mnist("test", seed=cfg.seed, size=max(cfg.eval_size, cfg.lee_size))
    test_xy = (test.images[: cfg.eval_size], test.labels[: cfg.eval_size])
    lee_x = test.images[: cfg.lee_size]
    say(f"rotated MNIST: {len(train)} training digits, {len(test)} test digits")
    command = _command(cfg, out_dir)
    timings: dict[str, float] = {}
    paths: dict[str, Path] = {}

    pretrained = None
    if any(base == "mae" for _, base, _ in variants):
        digits, _ = load_pretraining_digits(seed=cfg.seed, size=cfg.pretrain_size)
        mae = MAE(
            _build(cfg, "vit"),
            decoder_dim=cfg.decoder_dim,
            decoder_depth=cfg.decoder_depth,
            mask_ratio=cfg.mask_ratio,
        ).to(dev)
        curve = pretrain_mae(
            mae,
            digits,
            epochs=cfg.mae_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.mae_lr,
            seed=cfg.seed,
            log=say,
        )
        pretrained = {k: v.detach().cpu().clone() for k, v in mae.encoder.state_dict().items()}
        timings["mae_pretraining"] = time.perf_counter() - t0
        meta = _meta(cfg, command, seconds=dict(timings))
        paths["mae_pretraining"] = write_table(out_dir / "mae_pretraining.csv", curve, meta)

    cache.mkdir(parents=True, exist_ok=True)
    frames = []
    for name, base, augment in variants:
        t = time.perf_counter()
        say(f"--- {name}")
        model = _build(cfg, base)
        if base == "mae":
            model.load_state_dict(pretrained)
            torch.manual_seed(cfg.seed)
            model.reset_classifier(10)
        model.to(dev)
        torch.save(model.state_dict(), cache / f"{name}_start.pt")
        frame = finetune(
            model,
            (train.images, train.labels),
            test_xy,
            lee_x,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            augment=augment,
            seed=cfg.seed,
            log=say,
        )
        torch.save(model.state_dict(), cache / f"{name}_end.pt")
        frames.append(frame.assign(variant=name))
        timings[name] = time.perf_counter() - t
        table = pd.concat(frames, ignore_index=True)
        first = ["variant", "epoch", "accuracy", "lee_rotate", "lee_translate"]
        table = table[first + [c for c in table.columns if c not in first]]
        timings["total"] = time.perf_counter() - t0
        meta = _meta(cfg, command, seconds=dict(timings), layerwise="pending")
        paths["epochs"] = write_table(out_dir / "epochs.csv", table, meta)

    t = time.perf_counter()
    try:
        lw_path, status = run_layerwise(cfg, out_dir, cache_dir=cache, command=command, log=say)
    except Exception as err:  # noqa: BLE001 -- training results stand; record why this failed
        lw_path, status = None, f"failed: {type(err).__name__}: {err}"
        say(f"layer-wise decomposition {status}; rerun it with --layerwise-only")
    if lw_path is not None:
        paths["layerwise"] = lw_path
    timings["layerwise"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    timings["total_cpu"] = time.process_time() - cpu0
    meta = _meta(cfg, command, seconds=dict(timings), layerwise=status)
    paths["epochs"] = write_table(out_dir / "epochs.csv", table, meta)
    say(f"done in {timings['total']:.0f} s; layer-wise: {status}")
    return paths


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lielib.book.rotated_mnist.mae",
        description="Pretrain a small MAE ViT on MNIST, fine-tune it (and baselines) on rotated "
        "MNIST, and track accuracy and Lie derivatives; writes results/rotated_mnist/.",
    )
    p.add_argument(
        "--preset",
        choices=("cpu", "paper"),
        default="cpu",
        help="cpu: the book's default (~10 CPU-minutes, 1 thread); paper: 100 epochs on a GPU",
    )
    for f in fields(ExperimentConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "variants":
            p.add_argument(
                flag, nargs="+", default=None, help="mae, scratch, cnn; '+rot' adds augmentation"
            )
        else:
            p.add_argument(flag, type=type(f.default), default=None)
    p.add_argument(
        "--out", default=None, help="results folder (default <repo>/results/rotated_mnist)"
    )
    p.add_argument(
        "--cache",
        default=None,
        help="folder for model weights (default <repo>/cache/rotated_mnist)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--layerwise-only",
        action="store_true",
        help="only the layer-wise decomposition, from the weights a previous run cached",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Command-line entry point: ``python -m lielib.book.rotated_mnist.mae [--preset paper] [--epochs N] ...``."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    values = dict(PAPER_SCALE) if args.preset == "paper" else {}
    for f in fields(ExperimentConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = tuple(v) if f.name == "variants" else v
    cfg = ExperimentConfig(**values)
    try:
        for name in cfg.variants:
            _parse_variant(name)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda was asked for but no CUDA device is available; use --device cpu"
        )
    out = Path(args.out) if args.out else ROOT / "results" / "rotated_mnist"
    if args.layerwise_only:
        path, status = run_layerwise(cfg, out, cache_dir=args.cache)
        if path is None:
            raise SystemExit(f"layer-wise decomposition {status}")
        return {"layerwise": path}
    return run_experiment(cfg, out, cache_dir=args.cache)


if __name__ == "__main__":
    main()
