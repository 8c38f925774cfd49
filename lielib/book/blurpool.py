"""A ResNet-18 with every strided path blurred, and its training as the zoo's twin.

timm's ``resnetblur18`` blurs the max-pool and the blocks' first 3 x 3 convolutions but
keeps the 7 x 7 / 2 stem convolution and the 1 x 1 / 2 shortcut convolutions. Here
every subsampling step is a BlurPool (:class:`timm.layers.BlurPool2d`, the binomial
``[1, 2, 1]`` filter with reflection padding, {cite:p}`zhang2019making`) after a stride-1
operation:

- stem: ``conv 7x7/1 -> BN -> ReLU -> blur/2 -> max 3x3/1 -> blur/2`` (Zhang's stem with a
  blurred stride-1 convolution);
- blocks: timm's ``aa_layer``, ``conv 3x3/1 -> BN -> ReLU -> blur/2 -> conv 3x3/1``;
- shortcuts: ``blur/2 -> conv 1x1/1 -> BN`` (Zhang's order).

The filters have no parameters, so the twin has exactly the parameter count of timm's
``resnet18`` with the same arguments. Registered with timm as :data:`ARCH`, so that the
zoo's :func:`lielib.book.zoo.create` and :func:`lielib.book.zoo_train.train_entry` build and
train it with the zoo's recipe, seed and head rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from timm.layers import BlurPool2d
from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from .paths import NotAvailableError, cache_dir

__all__ = ["ARCH", "MissingTwinError", "downsampling_modules", "load_twin", "resnet18_blurall",
           "twin_checkpoint", "twin_entry"]

ARCH = "resnet18_blurall"
"""The timm name of the fully blurred ResNet-18."""


class MissingTwinError(NotAvailableError, FileNotFoundError):
    """The anti-aliased twin has not been trained on this machine (the message says how)."""


@register_model
def resnet18_blurall(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with a BlurPool before every subsampling (stem, pooling, blocks, shortcuts).

    Accepts :class:`timm.models.resnet.ResNet`'s keyword arguments (``in_chans``,
    ``num_classes``, ...); there are no pretrained weights.
    """
    if pretrained:
        raise ValueError(f"{ARCH} has no pretrained weights; train it (lielib.book.aliasing)")
    for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(k, None)
    model = ResNet(block=BasicBlock, layers=(2, 2, 2, 2), aa_layer=BlurPool2d, **kwargs)
    stem = model.conv1
    if not isinstance(stem, nn.Conv2d):
        raise TypeError(f"expected a single-convolution stem, got {type(stem).__name__}")
    stem.stride = (1, 1)
    width = stem.out_channels
    model.maxpool = nn.Sequential(BlurPool2d(width, stride=2),
                                  nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                                  BlurPool2d(width, stride=2))
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        block = stage[0]
        ds = block.downsample
        if ds is None or ds[0].stride == (1, 1):
            continue
        conv, norm = ds[0], ds[1]
        stride = conv.stride[0]
        conv.stride = (1, 1)
        block.downsample = nn.Sequential(BlurPool2d(conv.in_channels, stride=stride), conv, norm)
    for info in model.feature_info:
        if info["module"] == "act1":
            info["reduction"] = 1  # the stem convolution now keeps the input grid
    return model


def downsampling_modules(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """The leaf modules whose output grid is coarser than their input grid, in call order.

    One forward pass of ``x`` ``(B, C, H, W)`` with hooks that are removed afterwards.
    """
    found: list[tuple[str, nn.Module]] = []

    def hook(name: str):
        def fn(m: nn.Module, args: tuple, out: Any) -> None:
            a = args[0] if args else None
            if (isinstance(a, torch.Tensor) and isinstance(out, torch.Tensor) and a.ndim == 4
                    and out.ndim == 4 and out.shape[-1] < a.shape[-1]):
                found.append((name, m))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def twin_entry(zoo_name: str = "resnet-large", steps: int | None = None):
    """The zoo entry ``zoo_name`` with its architecture replaced by :data:`ARCH`.

    Same data, augmentation, kwargs and family; named ``<zoo_name>-blurall``, or
    ``<zoo_name>-blurall-<steps>`` for a twin trained for another number of steps than
    the zoo's :data:`lielib.book.zoo.STEPS`.
    """
    from . import zoo

    entry = zoo.get_entry(zoo_name)
    if entry.arch != "resnet18":
        raise ValueError(f"the blurred twin is a ResNet-18; zoo model {zoo_name!r} is "
                         f"{entry.arch}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    suffix = "" if steps in (None, zoo.STEPS) else f"-{steps}"
    return dataclasses.replace(entry, name=f"{zoo_name}-blurall{suffix}", arch=ARCH)


def twin_checkpoint(zoo_name: str = "resnet-large", seed: int = 0, steps: int | None = None):
    """Where the twin trained with seed ``seed`` is cached: ``<cache>/aliasing/seed<k>/<name>``."""
    return cache_dir("aliasing", f"seed{seed}", twin_entry(zoo_name, steps).name, "final.pt")


def load_twin(zoo_name: str = "resnet-large", seed: int = 0, steps: int | None = None
              ) -> tuple[nn.Module, dict]:
    """The trained twin of ``zoo_name`` (seed ``seed``, ``steps`` steps) in eval mode, and its record.

    Raises:
        MissingTwinError: it has not been trained here; the message gives the command.
    """
    from . import zoo
    from .training import load_checkpoint

    path = twin_checkpoint(zoo_name, seed, steps)
    if not path.is_file():
        extra = "" if steps in (None, zoo.STEPS) else f" --twin-steps {steps}"
        raise MissingTwinError(
            f"no trained {ARCH} twin of {zoo_name!r} (seed {seed}) at {path}; train it with "
            f"`python -m lielib.book.aliasing --train-twin --twin-seed {seed}{extra}`")
    state = load_checkpoint(path)
    model = zoo.create(twin_entry(zoo_name, steps), seed=int(state["record"]["seed"]))
    model.load_state_dict(state["model"])
    return model.eval(), dict(state["record"])
