"""The aliasing experiments: layer-wise Lie derivatives of trained models, to ``results/``.

``python -m lielib.book.aliasing`` writes, under ``results/aliasing/``:

* ``layerwise.csv``: exact layer-wise contributions ``||J_{>m} L m||^2`` per model,
  action, image and module (:func:`lielib.decompose.layerwise_lee`), with each image's
  end-to-end ``||L f||^2`` in ``total``.
* ``methods.csv``: for one model and ``translate_x``, per module, the exact value, the
  100-probe estimate and the integer-shift error (:func:`lielib.decompose.layerwise_shift_error`).
* ``antialias.csv`` and ``antialias_summary.csv``: a trained ResNet against the same
  weights in timm's anti-aliased twin (BlurPool before every stride, ``resnetblur*``):
  per-module contributions, and accuracy and end-to-end error per variant.

Models: ImageNet classifiers through :func:`lielib.book.models.load_model` on the offline
photos (the default, ``tf_efficientnet_lite0``, has real weights here), and trained
Fashion-MNIST zoo models through :func:`lielib.book.zoo.load_trained` on test images. A model
whose weights, checkpoint or data are not available here
(:class:`lielib.book.paths.NotAvailableError`) is skipped: the skip is printed and recorded
in the tables' metadata (``skipped``). Any other error fails the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from lielib import layerwise_contributions, layerwise_lee, layerwise_shift_error
from lielib.decompose import contributions_frame

from .models import model_family
from .paths import ROOT, NotAvailableError, cache_dir
from .results import metadata, record_skip, write_table

__all__ = ["ACTIONS", "EXPERIMENTS", "MissingTwinError", "NothingMeasuredError", "blur_checkpoint",
           "main", "run", "train_blur_twin"]

ACTIONS = ("translate_x", "rotate", "scale", "hyperbolic_rotate", "saturate")
EXPERIMENTS = ("layerwise", "methods", "antialias")
DEFAULT_IMAGENET = ("tf_efficientnet_lite0",)
DEFAULT_ZOO = ("resnet-large", "convnext-small", "mobilenetv3-small", "vit-small", "vit-large",
               "deit-small", "mixer-small", "mixer-large")


class MissingTwinError(NotAvailableError, FileNotFoundError):
    """The anti-aliased twin has not been trained on this machine (the message says how)."""


class NothingMeasuredError(RuntimeError):
    """Every model was skipped, so no table was written; the message lists the reasons."""


def _check_args(zoo_models, actions, only, counts: dict[str, int], antialias) -> None:
    from lielib import get_action

    from . import zoo

    unknown = [o for o in only if o not in EXPERIMENTS]
    if not only or unknown:
        raise ValueError(f"only= must name experiments from {EXPERIMENTS}, got {list(only)}")
    if not actions:
        raise ValueError(f"no actions given; choose from {ACTIONS} (or lielib.list_actions())")
    for a in actions:
        get_action(a)  # raises, naming the available actions
    names = zoo.zoo_names()
    bad = [n for n in [*zoo_models, *([antialias[0]] if antialias else [])] if n not in names]
    if bad:
        raise ValueError(f"unknown zoo models {bad}; the zoo has: {', '.join(names)}")
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _imagenet(name: str, n: int, seed: int):
    from .data import load_photos
    from .models import load_model

    model, info = load_model(name)
    batch = load_photos(n, data_config=info.data_config, seed=seed)
    return model, batch.images, {"model": name, "weights": info.source, "dataset": "photos",
                                 "family": info.family}


def _zoo_images(n: int, seed: int, offset: int = 0):
    from . import zoo
    from .data import load_idx, seeded_indices

    images, labels = load_idx("fashion-mnist", "test")
    idx = seeded_indices(len(images), n + offset, seed)[offset:]
    return zoo.preprocess(images[idx]), labels[idx]


def _zoo(name: str, n: int, seed: int):
    from . import zoo

    model, record = zoo.load_trained(name)
    x, _ = _zoo_images(n, seed)
    return model, x, {"model": f"zoo:{name}", "weights": f"zoo checkpoint (test acc "
                      f"{record.get('test_acc')})", "dataset": "fashion-mnist",
                      "family": model_family(zoo.get_entry(name).arch)}


def _load_all(imagenet, zoo_models, n_photos, n_zoo, seed, skipped):
    for name in imagenet:
        try:
            yield _imagenet(name, n_photos, seed)
        except NotAvailableError as err:
            record_skip(skipped, name, err)
    for name in zoo_models:
        try:
            yield _zoo(name, n_zoo, seed)
        except NotAvailableError as err:
            record_skip(skipped, f"zoo:{name}", err)


def _layerwise(model, x, info, actions, seed) -> pd.DataFrame:
    frames = []
    for action in actions:
        dec = layerwise_contributions(model, x, action, seed=seed)
        f = contributions_frame(dec.sites, dec.values)
        f["total"] = dec.total.square().sum(-1).double().cpu().numpy()[f.image.to_numpy()]
        f["action"] = action
        f["mode"] = dec.mode
        for k, v in info.items():
            f[k] = v
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def _methods(model, x, info, num_probes, seed) -> pd.DataFrame:
    ex = layerwise_lee(model, x, "translate_x")
    pr = layerwise_lee(model, x, "translate_x", method="probes", num_probes=num_probes, seed=seed)
    sh = layerwise_shift_error(model, x)
    keys = ["module", "module_type", "layer_kind", "order", "call", "downsampling"]
    out = ex.groupby(keys, as_index=False).value.mean().rename(columns={"value": "exact"})
    out["probes"] = pr.groupby(keys).value.mean().reindex(
        pd.MultiIndex.from_frame(out[keys])).to_numpy()
    sh_mean = sh.groupby(keys).value.mean()
    out["shift"] = sh_mean.reindex(pd.MultiIndex.from_frame(out[keys])).to_numpy()
    out["num_probes"] = num_probes
    for k, v in info.items():
        out[k] = v
    return out


def blur_checkpoint(zoo_name: str, blur_arch: str) -> Path:
    """Where the anti-aliased twin trained with the zoo's recipe is cached."""
    return cache_dir("aliasing", f"{blur_arch}-{zoo_name}", "final.pt")


def train_blur_twin(zoo_name: str = "resnet-large", blur_arch: str = "resnetblur18",
                    *, progress: bool = True) -> Path:
    """Train ``blur_arch`` with the zoo entry ``zoo_name``'s recipe, budget and seed.

    The twin goes through :func:`lielib.book.zoo_train.train_entry` (one recipe, the same
    steps and data), its checkpoints to ``<cache>/aliasing/<blur_arch>-<zoo_name>/``.
    """
    import dataclasses

    from . import zoo
    from .zoo_train import fashion_mnist, train_entry

    entry = dataclasses.replace(zoo.get_entry(zoo_name), name=f"{blur_arch}-{zoo_name}",
                                arch=blur_arch)
    train_entry(entry, fashion_mnist("train"), fashion_mnist("test"), progress=progress,
                cache=cache_dir("aliasing"))
    return blur_checkpoint(zoo_name, blur_arch)


def _create(arch: str, record: dict, state: dict):
    """timm's ``arch`` with the zoo's kwargs and ``state`` loaded strictly, in eval mode.

    timm's random initialisation, overwritten at once, runs on a forked RNG so that the
    global one is left alone.
    """
    import timm

    with torch.random.fork_rng(devices=[]):
        model = timm.create_model(arch, **_zoo_kwargs(record))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _antialias(zoo_name: str, blur_arch: str, n: int, n_acc: int, actions, seed, skipped):
    from . import zoo

    try:
        plain, record = zoo.load_trained(zoo_name)
        x, _ = _zoo_images(n, seed)
        xa, ya = _zoo_images(n_acc, seed + 1)
    except NotAvailableError as err:
        record_skip(skipped, f"antialias {zoo_name}/{blur_arch}", err)
        return None
    blur = _create(blur_arch, record, plain.state_dict())
    variants = [("plain", f"zoo:{zoo_name}", plain),
                ("blurpool_inserted", f"{blur_arch} (zoo:{zoo_name} weights)", blur)]
    ckpt = blur_checkpoint(zoo_name, blur_arch)
    if ckpt.is_file():
        from .training import load_checkpoint

        trained = _create(blur_arch, record, load_checkpoint(ckpt)["model"])
        variants.append(("blurpool_trained", f"{blur_arch} (trained, zoo recipe)", trained))
    else:
        record_skip(skipped, f"antialias blurpool_trained ({blur_arch})", MissingTwinError(
            f"no trained {blur_arch} at {ckpt}; train it with "
            "`python -m lielib.book.aliasing --train-blur`"))
    frames, rows = [], []
    for variant, label, model in variants:
        info = {"model": label, "variant": variant}
        f = _layerwise(model, x, info, actions, seed)
        frames.append(f)
        with torch.no_grad():
            acc = float((model(xa).argmax(-1) == ya).float().mean())
        per_action = f.drop_duplicates(["action", "image"]).groupby("action").total.mean()
        rows.append({"variant": variant, "model": info["model"], "accuracy": acc,
                     "num_test_images": n_acc,
                     **{f"total_{a}": float(per_action[a]) for a in actions}})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


def _zoo_kwargs(record: dict) -> dict:
    import json

    return json.loads(record.get("model_kwargs") or '{"in_chans": 1, "num_classes": 10}')


def run(
    out: str | Path | None = None,
    *,
    imagenet: tuple[str, ...] = DEFAULT_IMAGENET,
    zoo_models: tuple[str, ...] = DEFAULT_ZOO,
    actions: tuple[str, ...] = ACTIONS,
    num_photos: int = 2,
    num_zoo_images: int = 8,
    num_probes: int = 100,
    methods_models: tuple[str, ...] = ("zoo:resnet-large", "tf_efficientnet_lite0"),
    antialias: tuple[str, str] | None = ("resnet-large", "resnetblur18"),
    seed: int = 0,
    only: tuple[str, ...] = EXPERIMENTS,
) -> list[Path]:
    """Run the experiments and write the tables; returns the written paths.

    Raises:
        ValueError: an unknown experiment, action or zoo model, or a count below 1.
        NothingMeasuredError: every model was skipped (the reasons are in the message).
    """
    _check_args(zoo_models, actions, only, {"num_photos": num_photos, "num_probes": num_probes,
                                            "num_zoo_images": num_zoo_images}, antialias)
    out = Path(out) if out is not None else ROOT / "results" / "aliasing"
    command = " ".join(["python -m lielib.book.aliasing", *sys.argv[1:]]) if sys.argv[0].endswith(
        "aliasing.py") else "python -m lielib.book.aliasing"
    written, skipped, frames, methods = [], [], [], []
    t0 = time.time()
    wanted = {"layerwise", "methods"} & set(only)
    for model, x, info in _load_all(imagenet if wanted else (), zoo_models if wanted else (),
                                    num_photos, num_zoo_images, seed, skipped):
        if "layerwise" in only:
            frames.append(_layerwise(model, x, info, actions, seed))
        if "methods" in only and info["model"] in methods_models:
            methods.append(_methods(model, x[:1], info, num_probes, seed))
    common = {"command": command, "seed": seed, "skipped": skipped, "actions": list(actions)}
    if frames:
        df = pd.concat(frames, ignore_index=True)
        written.append(write_table(out / "layerwise.csv", df, metadata(
            models=sorted(df.model.unique()), num_photos=num_photos,
            num_zoo_images=num_zoo_images, seconds=round(time.time() - t0, 1), **common)))
    if methods:
        df = pd.concat(methods, ignore_index=True)
        written.append(write_table(out / "methods.csv", df, metadata(
            models=sorted(df.model.unique()), num_probes=num_probes, action="translate_x",
            **common)))
    if "antialias" in only and antialias is not None:
        res = _antialias(*antialias, num_zoo_images, 500, actions, seed, skipped)
        if res is not None:
            df, summary = res
            meta = metadata(models=sorted(df.model.unique()), **common)
            written.append(write_table(out / "antialias.csv", df, meta))
            written.append(write_table(out / "antialias_summary.csv", summary, meta))
    if not written:
        reasons = "\n  ".join(skipped) or "no model was selected for the experiments asked"
        raise NothingMeasuredError(f"nothing measured, no table written to {out}; "
                                   f"skipped:\n  {reasons}")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Layer-wise aliasing experiments -> results/aliasing")
    ap.add_argument("--imagenet", nargs="*", default=list(DEFAULT_IMAGENET),
                    help="ImageNet models (load_model names), measured on the offline photos")
    ap.add_argument("--zoo", nargs="*", default=list(DEFAULT_ZOO), help="trained zoo models")
    ap.add_argument("--actions", nargs="+", default=list(ACTIONS))
    ap.add_argument("--num-photos", type=int, default=2)
    ap.add_argument("--num-zoo-images", type=int, default=8)
    ap.add_argument("--num-probes", type=int, default=100)
    ap.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-blur", action="store_true",
                    help="first train resnetblur18 with the zoo's resnet18 recipe (minutes)")
    a = ap.parse_args(argv)
    kwargs = {"imagenet": tuple(a.imagenet), "zoo_models": tuple(a.zoo),
              "actions": tuple(a.actions), "num_photos": a.num_photos,
              "num_zoo_images": a.num_zoo_images, "num_probes": a.num_probes, "seed": a.seed,
              "only": tuple(a.only)}
    try:
        _check_args(kwargs["zoo_models"], kwargs["actions"], kwargs["only"],
                    {k: kwargs[k] for k in ("num_photos", "num_probes", "num_zoo_images")},
                    ("resnet-large", "resnetblur18"))
    except ValueError as err:
        ap.error(str(err))
    if a.train_blur:
        print(train_blur_twin())
    try:
        paths = run(a.out, **kwargs)
    except NothingMeasuredError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
