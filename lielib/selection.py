"""Which modules a layer-wise decomposition visits, their kinds, and their tensors' layouts.

:func:`select_modules` picks the units, :func:`layer_kind` names their kinds, and
:class:`ModelLayouts` reads the layout of every hooked tensor from the model, since each
tensor is transformed along its own spatial axes (the paper's code guesses from shapes,
and so moves NHWC tensors inside ConvNeXt blocks along the wrong axes). Per family:

* CNNs (ResNet, EfficientNet, VGG, DenseNet, ... and plain ``nn.Module`` toys): NCHW up
  to the global pooling module (``model.global_pool`` or ``model.head.global_pool``);
  its output and everything computed after it is invariant (``None``).
* ViT, DeiT, BEiT, EVA (``num_prefix_tokens`` and ``patch_embed``): tokens with
  ``num_prefix_tokens`` leading tokens on the grid ``patch_embed.dynamic_feat_size``; the
  patch embedding maps NCHW to tokens without prefix (or NHWC with
  ``dynamic_img_size``); ``fc_norm``, ``head_drop``, ``head`` and the output of
  ``attn_pool`` are invariant (and ``head_dist`` of distilled DeiTs).
* MLP-Mixer, ResMLP, gMLP (``MlpMixer``): tokens without prefix on ``stem.grid_size``;
  ``head`` is invariant.
* ConvNeXt: NCHW, except NHWC inside ``ConvNeXtBlock.norm`` and ``ConvNeXtBlock.mlp``
  when the block does not use a convolutional MLP; the head after its global pool is
  invariant.
* Swin: NHWC in stages, tokens on ``block.input_resolution`` inside a block's
  ``norm2``/``mlp``; window attention works on window partitions, which have no image
  layout, so the default selection treats each ``SwinTransformerBlock`` as one unit.

Anything else raises :class:`UnresolvedLayoutError` naming the module. This module is
the only place (besides :mod:`lielib.book.models`) that knows timm's internals; it never
imports timm, it reads class names and attributes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .layout import Layout

__all__ = [
    "EXCLUDED_CLASS_NAMES", "KIND_BY_CLASS_NAME", "LAYER_KINDS", "UNIT_CLASS_NAMES",
    "ModelLayouts", "UnresolvedLayoutError", "layer_kind", "select_modules",
]

#: Composite modules the paper measures as one unit (their children are not hooked).
UNIT_CLASS_NAMES = frozenset(
    {
        # attention, MLP blocks, whole blocks, embeddings, squeeze-excite and friends
        "Attention", "AttentionRope", "EvaAttention", "MHSA", "GPSA", "ClassAttn",
        "AttentionPoolLatent",
        "Mlp", "GluMlp", "SwiGLU", "SwiGLUPacked", "GatedMlp", "ConvMlp",
        "MixerBlock", "ResBlock", "SpatialGatingBlock", "Affine", "SwinTransformerBlock",
        "PatchEmbed", "HybridEmbed",
        "SqueezeExcite", "SEModule", "EffectiveSEModule", "GatherExcite", "EcaModule",
        # norms with children, anti-aliasing filters; global pooling (pool + flatten) and
        # Swin's 2x2 patch merging (space-to-depth + linear)
        "EvoNorm2dB0", "EvoNorm2dB1", "EvoNorm2dB2", "EvoNorm2dS0", "EvoNorm2dS0a",
        "EvoNorm2dS1", "EvoNorm2dS1a", "EvoNorm2dS2", "EvoNorm2dS2a", "BlurPool2d",
        "SelectAdaptivePool2d", "PatchMerging",
    }
)

#: Identity in eval mode: never hooked (their Lie derivative is exactly zero).
EXCLUDED_CLASS_NAMES = frozenset({"Identity", "DropPath", "DropBlock2d", "PatchDropout"})

#: Layer kinds of timm classes that torch's own class hierarchy does not tell.
KIND_BY_CLASS_NAME = {
    **{n: "attention" for n in ("Attention", "AttentionRope", "EvaAttention", "MHSA", "GPSA",
                                "ClassAttn", "WindowAttention")},
    **{n: "mlp" for n in ("Mlp", "GluMlp", "SwiGLU", "SwiGLUPacked", "GatedMlp", "ConvMlp")},
    **{n: "block" for n in ("MixerBlock", "ResBlock", "SpatialGatingBlock",
                            "SwinTransformerBlock")},
    **{n: "embed" for n in ("PatchEmbed", "HybridEmbed")},
    **{n: "pool" for n in ("SelectAdaptivePool2d", "AttentionPoolLatent", "BlurPool2d",
                           "AdaptiveAvgMaxPool2d", "FastAdaptiveAvgPool", "PatchMerging")},
    **{n: "other" for n in ("SqueezeExcite", "SEModule", "EffectiveSEModule", "GatherExcite",
                            "EcaModule", "Affine")},
    **{n: "norm" for n in ("LayerNorm2d", "RmsNorm", "RmsNorm2d", "BatchNormAct2d",
                           "GroupNormAct", "LayerNormAct", "LayerNormAct2d", "FrozenBatchNorm2d")},
    **{n: "activation" for n in ("Swish", "Mish", "HardSwish", "HardSigmoid", "HardMish",
                                 "GELU", "GELUTanh", "QuickGELU", "Sigmoid", "Tanh",
                                 "PReLU", "SiLU", "Softplus")},
    "StdConv2d": "conv", "StdConv2dSame": "conv", "Conv2dSame": "conv",
    "ScaledStdConv2d": "conv", "ScaledStdConv2dSame": "conv", "MixedConv2d": "conv",
    "CondConv2d": "conv", "Linear": "linear",
}


#: The kinds :func:`layer_kind` returns, and ``residual`` for what no module covers.
LAYER_KINDS = (
    "activation", "conv", "linear", "attention", "mlp", "block", "norm", "pool", "embed",
    "other", "residual",
)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
_POOLS = (
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)


def _class_names(m: nn.Module) -> list[str]:
    return [c.__name__ for c in type(m).__mro__]


def layer_kind(module: nn.Module) -> str:
    """The kind of a module: one of :data:`LAYER_KINDS` (``residual`` excepted).

    >>> layer_kind(nn.Conv2d(1, 1, 3)), layer_kind(nn.GELU()), layer_kind(nn.LayerNorm(4))
    ('conv', 'activation', 'norm')
    """
    for name in _class_names(module):
        if name in KIND_BY_CLASS_NAME:
            return KIND_BY_CLASS_NAME[name]
        if name == "Module":
            break
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, _POOLS):
        return "pool"
    if type(module).__module__ == "torch.nn.modules.activation" or isinstance(
        module, nn.Softmax
    ):
        return "activation"
    return "other"


def _excluded(m: nn.Module) -> bool:
    return isinstance(m, (nn.Identity, nn.modules.dropout._DropoutNd)) or bool(
        set(_class_names(m)) & EXCLUDED_CLASS_NAMES
    )


def _is_unit(m: nn.Module) -> bool:
    return isinstance(m, _NORMS) or bool(set(_class_names(m)) & UNIT_CLASS_NAMES)


def _split_child(m: nn.Module) -> str | None:
    """timm's ``*NormAct*`` layers end in an ``act`` child measured on its own."""
    act = getattr(m, "act", None)
    if any("NormAct" in n for n in _class_names(m)) and isinstance(act, nn.Module):
        return None if _excluded(act) else "act"
    return None


def select_modules(
    model: nn.Module, modules: Sequence[str] | None = None
) -> list[tuple[str, str | None]]:
    """The measured units as ``(name, split_child)`` pairs in ``named_modules`` order.

    The paper's selection: leaf modules, plus composite modules measured as one unit
    (norms, attention, MLP blocks, Mixer blocks, patch embeddings, squeeze-excite,
    global pooling; see :data:`UNIT_CLASS_NAMES`) whose children
    are not hooked. Identity-like modules (dropout, drop-path, ``nn.Identity``) are
    skipped: their Lie derivative is zero. A timm norm-activation layer is split: its
    ``act`` child is a unit of its own and the norm's row holds the rest (``split_child``
    names the child whose share is subtracted).

    Args:
        modules: explicit qualified names (as in ``model.named_modules()``) to measure
            instead; none may contain another.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.ReLU(), nn.Flatten())
    >>> select_modules(net)  # dropout is the identity in eval mode: skipped
    [('0', None), ('2', None), ('3', None)]
    """
    named = dict(model.named_modules())
    if modules is not None:
        names = None if isinstance(modules, str) else list(modules)
        if not names or not all(isinstance(n, str) for n in names):
            raise TypeError(f"modules= must be a non-empty list of names from "
                            f"model.named_modules() (or None), got {modules!r}")
        missing = [n for n in names if n not in named]
        if missing:
            raise ValueError(
                f"modules not in the model: {missing}; use names from model.named_modules()"
            )
        if len(set(names)) != len(names):
            raise ValueError("modules= lists a name twice")
        for a, b in itertools.permutations(names, 2):
            if b.startswith(a + ".") or a == "":
                raise ValueError(
                    f"modules= lists {a!r} and its descendant {b!r}: contributions would be "
                    "counted twice; choose one"
                )
        return [(n, None) for n in names]
    out: list[tuple[str, str | None]] = []

    def visit(prefix: str, m: nn.Module) -> None:
        if _excluded(m):
            return
        children = list(m.named_children())
        if not children or _is_unit(m):
            child = _split_child(m)
            out.append((prefix, child))
            if child is not None:
                out.append((f"{prefix}.{child}" if prefix else child, None))
            return
        for cname, c in children:
            visit(f"{prefix}.{cname}" if prefix else cname, c)

    visit("", model)
    return out


class UnresolvedLayoutError(ValueError):
    """The layout of a hooked tensor cannot be read from the model's metadata."""


def _grid(patch_embed: nn.Module, hw: tuple[int, int]) -> tuple[int, int]:
    if hasattr(patch_embed, "dynamic_feat_size"):
        return tuple(int(g) for g in patch_embed.dynamic_feat_size(hw))
    return tuple(int(g) for g in patch_embed.grid_size)


def _patch_embed_out(patch_embed: nn.Module, grid: tuple[int, int]) -> Layout:
    if getattr(patch_embed, "flatten", True) is True:
        return Layout.tokens(0, grid)
    fmt = str(getattr(patch_embed, "output_fmt", "NCHW"))
    fmt = fmt.split(".")[-1].upper()
    if fmt in ("NCHW", "NHWC"):
        return Layout(fmt)
    if fmt == "NLC":
        return Layout.tokens(0, grid)
    raise UnresolvedLayoutError(f"patch embedding output format {fmt!r} is not supported")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@dataclass
class _Rule:
    family: str
    inner: dict[str, tuple[Layout | None, Layout | None]]  # prefix -> (in, out)
    default: Layout
    head: tuple[str, ...]  # prefixes whose tensors are invariant
    pool: tuple[str, ...]  # prefixes whose input is spatial, output invariant


class ModelLayouts:
    """The layouts of the input and output of every module of ``model``.

    Args:
        model: a classifier; timm families are recognised by class and attributes.
        input_shape: the model input's shape ``(B, C, H, W)``.

    Attributes:
        family: ``"cnn"``, ``"vit"``, ``"mixer"``, ``"convnext"`` or ``"swin"``.
        boundary: the global pooling module after which every tensor is invariant, or
            ``None`` when the family rule names its head modules instead.
    """

    def __init__(self, model: nn.Module, input_shape: torch.Size | tuple[int, ...]):
        if len(input_shape) != 4:
            raise ValueError(f"the model input must be (B, C, H, W), got {tuple(input_shape)}")
        self.model = model
        hw = (int(input_shape[-2]), int(input_shape[-1]))
        names = set(_class_names(model))
        self.boundary: nn.Module | None = None
        self._swin_blocks: dict[str, nn.Module] = {}
        self._nhwc: list[str] = []
        if "MlpMixer" in names:
            grid = _grid(model.stem, hw)
            tok = Layout.tokens(0, grid)
            self.rule = _Rule(
                "mixer", {"stem.proj": (Layout("NCHW"), Layout("NCHW")),
                          "stem": (Layout("NCHW"), _patch_embed_out(model.stem, grid))},
                tok, ("head", "head_drop"), ())
        elif isinstance(getattr(model, "num_prefix_tokens", None), int) and hasattr(
            model, "patch_embed"
        ):
            grid = _grid(model.patch_embed, hw)
            pe_out = _patch_embed_out(model.patch_embed, grid)
            tok = Layout.tokens(model.num_prefix_tokens, grid)
            self.rule = _Rule(
                "vit",
                {"patch_embed.proj": (Layout("NCHW"), Layout("NCHW")),
                 "patch_embed.norm": (pe_out, pe_out),
                 "patch_embed": (Layout("NCHW"), pe_out)},
                tok, ("fc_norm", "head_drop", "head", "head_dist"), ("attn_pool",))
        elif "ConvNeXt" in names:
            self.rule = _Rule("convnext", {}, Layout("NCHW"), (), ())
            for name, mod in model.named_modules():
                if "ConvNeXtBlock" in _class_names(mod) and not getattr(mod, "use_conv_mlp", True):
                    self._nhwc += [f"{name}.norm", f"{name}.mlp"]
            self.boundary = _global_pool(model)
        elif "SwinTransformer" in names:
            self.rule = _Rule(
                "swin",
                {"patch_embed.proj": (Layout("NCHW"), Layout("NCHW")),
                 "patch_embed": (Layout("NCHW"), Layout("NHWC"))},
                Layout("NHWC"), (), ())
            self._swin_blocks = {
                n: m for n, m in model.named_modules() if "SwinTransformerBlock" in _class_names(m)
            }
            self.boundary = _global_pool(model)
        else:
            self.rule = _Rule("cnn", {}, Layout("NCHW"), (), ())
            self.boundary = _global_pool(model)
        self.family = self.rule.family

    def resolve(
        self, name: str, x: torch.Tensor, y: torch.Tensor, *, after_boundary: bool = False
    ) -> tuple[Layout | None, Layout | None]:
        """``(input layout, output layout)`` of module ``name``; ``None`` means invariant.

        Args:
            name: qualified module name as in ``model.named_modules()``.
            x, y: the module's input and output (used only to check the resolved layout).
            after_boundary: the module ran after the global pooling module.

        Raises:
            UnresolvedLayoutError: the family rule has no layout for this tensor.
        """
        lin, lout = self._lookup(name, x, y, after_boundary)
        for role, t, lay in (("input", x, lin), ("output", y, lout)):
            _check(name, role, t, lay)
        return lin, lout

    def _lookup(self, name: str, x: torch.Tensor, y: torch.Tensor, after_boundary: bool):
        rule = self.rule
        if after_boundary:
            return None, None
        if self.boundary is not None and self.model.get_submodule(name) is self.boundary:
            return self.rule.default, None
        if any(_under(name, p) for p in rule.head):
            return None, None
        if any(_under(name, p) for p in rule.pool):
            return rule.default, None
        for prefix, lay in rule.inner.items():
            if name == prefix:
                return lay
            if _under(name, prefix):
                raise UnresolvedLayoutError(
                    f"module {name!r}: no layout rule inside {prefix!r} ({self.family}); "
                    f"select {prefix!r} as one unit instead"
                )
        if self._nhwc and any(_under(name, p) for p in self._nhwc):
            return Layout("NHWC"), Layout("NHWC")
        for bname, block in self._swin_blocks.items():
            if not _under(name, bname) or name == bname:
                continue
            rel = name[len(bname) + 1:]
            if rel == "norm1":
                return Layout("NHWC"), Layout("NHWC")
            if _under(rel, "norm2") or _under(rel, "mlp"):
                grid = tuple(int(g) for g in block.input_resolution)
                return Layout.tokens(0, grid), Layout.tokens(0, grid)
            raise UnresolvedLayoutError(
                f"module {name!r}: Swin window attention works on window partitions, which "
                f"have no image layout; select the block {bname!r} as one unit"
            )
        if rule.family == "cnn":
            return _cnn_layout(name, x), _cnn_layout(name, y)
        return rule.default, rule.default


def _cnn_layout(name: str, t: torch.Tensor) -> Layout | None:
    """In a CNN a 4-d tensor is NCHW and a 2-d one (features, logits) has no spatial axes."""
    if t.ndim == 4:
        return Layout("NCHW")
    if t.ndim == 2:
        return None
    raise UnresolvedLayoutError(
        f"module {name!r}: a {t.ndim}-d tensor of shape {tuple(t.shape)} in a CNN has no known "
        "layout; pass modules= to choose other units"
    )


def _global_pool(model: nn.Module) -> nn.Module | None:
    pool = getattr(model, "global_pool", None)
    if not isinstance(pool, nn.Module):
        head = getattr(model, "head", None)
        pool = getattr(head, "global_pool", None) if isinstance(head, nn.Module) else None
    return pool if isinstance(pool, nn.Module) else None


def _check(name: str, role: str, t: torch.Tensor, lay: Layout | None) -> None:
    if lay is None:
        return
    hint = "pass modules= to choose units whose tensors have an image layout"
    if lay.kind == "tokens":
        n = t.shape[1] - lay.num_prefix_tokens if t.ndim == 3 else -1
        if t.ndim != 3 or (lay.grid is not None and n != lay.grid[0] * lay.grid[1]):
            raise UnresolvedLayoutError(
                f"module {name!r}: its {role} of shape {tuple(t.shape)} is not a token sequence "
                f"{lay}; {hint}"
            )
    elif t.ndim != 4:
        raise UnresolvedLayoutError(
            f"module {name!r}: its {role} of shape {tuple(t.shape)} is not a {lay.kind} image "
            f"in this {'model' if lay.kind == 'NCHW' else 'block'}; {hint}"
        )
