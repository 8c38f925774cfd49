"""The rotated-MNIST models: a small timm ViT, a CNN baseline, and layer-wise LR decay.

* :func:`small_vit`: a timm ``VisionTransformer`` for ``(B, 1, 28, 28)`` digits (patch 4,
  so a 7 x 7 grid and one class token; average pooling over patch tokens), attention
  unfused so that ``torch.func`` can differentiate it.
* :func:`small_cnn`: six 3 x 3 convolutions (``w-w-2w-2w-4w-4w``), BatchNorm and ReLU, two
  2 x 2 max-pools, global average pooling, a linear head.
* :func:`build_model`: either of them, initialised from a seed inside
  ``torch.random.fork_rng()`` (the caller's RNG is untouched).
* :func:`param_groups`: AdamW groups with ``lr_scale`` for layer-wise learning-rate decay,
  ``lr_i = lr * decay^(D + 1 - i)`` for layer ``i`` of a depth-``D`` ViT, and no weight
  decay on biases, norms, the class token and position embeddings.
"""

from __future__ import annotations

import itertools

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = ["MODEL_KINDS", "build_model", "param_groups", "small_cnn", "small_vit", "unfuse_attention"]

MODEL_KINDS = ("vit", "cnn")


def unfuse_attention(module: nn.Module) -> nn.Module:
    """Switch timm attention to the explicit softmax path (forward mode needs it); returns ``module``."""
    for m in module.modules():
        if isinstance(getattr(m, "fused_attn", None), bool):
            m.fused_attn = False
    return module


def small_vit(*, embed_dim: int = 64, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0,
              patch_size: int = 4, img_size: int = 28, num_classes: int = 10) -> VisionTransformer:
    """A small timm ViT for ``(B, 1, 28, 28)`` digits: class token, average pooling, unfused attention.

    ``global_pool="avg", fc_norm=False`` keeps the final ``norm`` that MAE pretraining
    trains, so the pretrained encoder and the classifier share every layer but the head.
    """
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    model = VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=1,
                              num_classes=num_classes, global_pool="avg", fc_norm=False,
                              embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                              mlp_ratio=mlp_ratio)
    return unfuse_attention(model)


def small_cnn(*, width: int = 16, num_classes: int = 10) -> nn.Sequential:
    """Six conv-BN-ReLU layers (``w, w, 2w, 2w, 4w, 4w`` channels), two 2 x 2 max-pools, global average pooling.

    The receptive field of the last convolution covers the whole 28 x 28 digit.
    """
    chans = [1, width, width, 2 * width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(chans)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if i in (1, 3):
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], num_classes))


def build_model(kind: str, *, seed: int, embed_dim: int = 64, depth: int = 4, num_heads: int = 4,
                mlp_ratio: float = 2.0, patch_size: int = 4, cnn_width: int = 16) -> nn.Module:
    """A freshly initialised ``"vit"`` or ``"cnn"``, seeded on a forked RNG.

    timm and ``nn.Conv2d`` draw their initial weights from the global RNG, so the
    construction runs inside ``torch.random.fork_rng()`` seeded with ``seed``.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {MODEL_KINDS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "cnn":
            return small_cnn(width=cnn_width)
        return small_vit(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, patch_size=patch_size)


def _vit_layer(name: str, depth: int) -> int:
    """Layer index of a ViT parameter: 0 for the embeddings, ``i + 1`` for block ``i``, ``depth + 1`` after."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model: nn.Module, *, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices only, layer-wise LR decay on a ViT.

    For a timm ViT of depth ``D`` a parameter of layer ``i`` (0: embeddings, ``1..D``:
    blocks, ``D + 1``: final norm and head) gets ``lr_scale = layer_decay^(D + 1 - i)``,
    which :func:`lielib.book.training.fit` multiplies into its learning rate. Other models
    (and ``layer_decay=1``) get ``lr_scale = 1`` everywhere.

    Returns:
        A list of ``{"params", "weight_decay", "lr_scale"}`` dicts (empty groups left out).
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    depth = len(model.blocks) if isinstance(model, VisionTransformer) else None
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = _vit_layer(name, depth) if depth is not None else 0
        decay = p.ndim > 1 and not name.startswith(("cls_token", "pos_embed", "reg_token"))
        groups.setdefault((layer, decay), []).append(p)
    top = depth + 1 if depth is not None else 0
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0,
             "lr_scale": layer_decay ** (top - layer) if depth is not None else 1.0}
            for (layer, decay), ps in sorted(groups.items())]
