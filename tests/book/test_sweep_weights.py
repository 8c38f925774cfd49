"""The real-weights path, offline: a Hugging Face hub cache laid out as ``huggingface_hub``
writes it, holding safetensors saved from seeded timm models; ``load_model`` and one shard
of the ``paper`` sweep must load exactly those weights, each with its own data config."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lielib.book.results import ROOT, meta_path
from lielib.book.sweep import result_path

pytestmark = pytest.mark.slow

NAMES = ("resnet18.a1_in1k", "vit_tiny_patch16_224.augreg_in21k_ft_in1k")
WNIDS = ("n01440764", "n01443537")  # the first two ImageNet-1k classes

CHECK = '''
import hashlib, json, sys
import torch
from lielib.book.data import load_imagenet_val
from lielib.book.models import load_model
from lielib.lie import lee

def checksum(state):
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()

folder, names = sys.argv[1], sys.argv[2:]
out = {}
infos = {name: load_model(name) for name in names}
for name, (model, info) in infos.items():
    row = {"sha": checksum(model.state_dict()), "source": info.source, "tag": info.full_name,
           "data_config": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in info.data_config.items()}}
    if folder:
        for other, (_, other_info) in infos.items():
            x = load_imagenet_val(folder, 2, data_config=other_info, seed=0).images
            row[f"lee_with_config_of_{other}"] = lee(  # the sweep measures with the paper's stencil
                model, x, ["translate_x"], stencil="paper")["translate_x"].tolist()
    out[name] = row
print("RESULT" + json.dumps(out))
'''


def checksum(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out_hub_cache(hf_home: Path, repo_id: str, files: Path) -> Path:
    """``hub/models--org--name/{blobs,refs/main,snapshots/<commit>/...}`` as huggingface_hub
    writes it: LFS files (weights) as blobs named by their sha256, other files by their git
    blob sha1, snapshot entries as relative links to the blobs."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in sorted(files.iterdir()):
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest() if f.suffix == ".safetensors" else _git_blob_sha1(data)
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """A hub cache with seeded, perturbed weights for :data:`NAMES`; their checksums and configs."""
    import timm
    from timm.data import resolve_model_data_config
    from timm.models import get_pretrained_cfg, save_for_hf

    root = tmp_path_factory.mktemp("hf")
    expected = {}
    for seed, name in enumerate(NAMES):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=False)
        gen = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():  # unlike any initialisation timm or lielib would draw
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
        save_for_hf(model, str(root / "export" / name), safe_serialization=True)
        lay_out_hub_cache(root / "home", get_pretrained_cfg(name).hf_hub_id, root / "export" / name)
        config = resolve_model_data_config(model)
        expected[name] = {"sha": checksum(model.state_dict()),
                          "data_config": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in config.items()}}
    assert expected[NAMES[0]]["data_config"]["mean"] != expected[NAMES[1]]["data_config"]["mean"]
    return root / "home", expected


def _env(hf_home: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TIMM_FUSED_ATTN": "0",
            "LIELIB_CACHE": str(tmp_path / "cache"), **extra}


def _check(env: dict[str, str], folder: str = "") -> dict:
    res = subprocess.run([sys.executable, "-c", CHECK, folder, *NAMES], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.split("RESULT", 1)[1])


def test_load_model_reads_exactly_the_cached_weights(hub, tmp_path: Path) -> None:
    hf_home, expected = hub
    got = _check(_env(hf_home, tmp_path))
    for name in NAMES:
        assert got[name]["sha"] == expected[name]["sha"], name
        assert got[name]["source"] == "hub cache" and got[name]["tag"] == name
        for key in ("input_size", "mean", "std", "crop_pct", "interpolation"):
            assert got[name]["data_config"][key] == expected[name]["data_config"][key], (name, key)


@pytest.fixture
def paper_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A data root whose paper set is :data:`NAMES`, and a two-class ImageNet folder."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "paper_models.json").write_text(json.dumps(
        {"e2e_core_models": list(NAMES), "e2e_all_models": list(NAMES)}))
    rng = np.random.default_rng(0)
    imagenet = tmp_path / "imagenet" / "val"
    for wnid in WNIDS:
        (imagenet / wnid).mkdir(parents=True)
        for k in range(2):
            pixels = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(imagenet / wnid / f"ILSVRC2012_val_{wnid}_{k}.JPEG")
    return data, imagenet


def _shard_cmd(out: Path, imagenet: Path) -> list[str]:
    return [sys.executable, "-m", "lielib.book.sweep", "chapters/workers/measure_model.py",
            "--models", "paper", "--out", str(out), "--no-progress", "-p", "imagenet",
            str(imagenet), "-p", "n_images", "2", "-p", "actions", '["translate_x"]',
            "-p", "metrics", "false", "--shard", "0/1"]


def test_paper_shard_measures_the_cached_weights_with_their_own_data_config(
    hub, paper_inputs, tmp_path: Path
) -> None:
    hf_home, expected = hub
    data, imagenet = paper_inputs
    env = _env(hf_home, tmp_path, LIELIB_DATA=str(data))
    out = tmp_path / "out"
    res = subprocess.run(_shard_cmd(out, imagenet), env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "done 2, already there 0, failed 0" in res.stdout
    check = _check(env, str(imagenet))
    for name in NAMES:
        assert check[name]["sha"] == expected[name]["sha"]
        meta = json.loads(meta_path(result_path(out, name)).read_text())
        assert meta["weights"] == "hub cache" and meta["tag"] == name
        for key in ("mean", "std", "crop_pct"):
            assert meta["pretrained_cfg"][key] == expected[name]["data_config"][key]
        table = pd.read_csv(result_path(out, name))
        own = check[name][f"lee_with_config_of_{name}"]
        assert table["lee_translate_x"].to_numpy() == pytest.approx(own, rel=1e-4, abs=1e-9)
        other = next(n for n in NAMES if n != name)
        assert table["lee_translate_x"].to_numpy() != pytest.approx(
            check[name][f"lee_with_config_of_{other}"], rel=1e-3)  # the config matters


def test_paper_shard_without_the_cache_says_how_to_get_the_weights(paper_inputs, tmp_path: Path) -> None:
    data, imagenet = paper_inputs
    empty = tmp_path / "empty-hf-home"
    empty.mkdir()
    env = _env(empty, tmp_path, LIELIB_DATA=str(data))
    res = subprocess.run(_shard_cmd(tmp_path / "out", imagenet), env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    for name in NAMES:
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith(f"FAILED {name}:"))
        assert "WeightsUnavailableError" in line and "No pretrained weights" in line
        assert f"{empty}/hub/models--timm--{name}/" in line
    assert not list((tmp_path / "out").glob("*.csv"))
