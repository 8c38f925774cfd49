"""``python -m lielib.book.aliasing``: the aliasing experiments, to ``results/aliasing/``.

* ``layerwise``: per model, the exact layer-wise budget under both stencils on
  ``--num-images`` images (offline photos for ImageNet models, Fashion-MNIST test images for
  the zoo): ``layerwise/<model>-modules.csv`` and ``layerwise/<model>-images.csv``
  (:mod:`lielib.book.aliasing.layerwise`).
* ``methods``: for one image and ``translate_x``, per module, the exact value, the
  100-probe estimate and the integer-shift error (``methods.csv``).
* ``twin``: the zoo ResNet-18 against its fully blurred twin (:mod:`lielib.book.blurpool`)
  on ``--num-twin-images`` test images: ``twin-images.csv`` (LEE and the sensitivity ratio
  per image), ``twin-ratios.csv`` (paired bootstrap ratios), ``twin-models.csv``.

``--train-twin`` trains the pair of seed ``--twin-seed`` with the zoo's recipe and exits
(the twin; for seeds other than 0 the plain model too, seed 0's being the zoo's own).
A model whose weights, checkpoint or data are missing here
(:class:`lielib.book.paths.NotAvailableError`) is skipped, printed and recorded in the
metadata (``skipped``); any other error fails the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from lielib import layerwise_lee, layerwise_shift_error

from ..models import model_family
from ..paths import ROOT, NotAvailableError, safe_name
from ..results import check_output, metadata, record_skip, write_table
from ..zoo import STEPS
from .layerwise import STENCILS, budget_tables

__all__ = ["ACTIONS", "DEFAULT_IMAGENET", "DEFAULT_ZOO", "EXPERIMENTS", "NothingMeasuredError",
           "main", "run", "zoo_images"]

ACTIONS = ("translate_x", "rotate", "scale", "hyperbolic_rotate", "saturate")
EXPERIMENTS = ("layerwise", "methods", "twin")
DEFAULT_IMAGENET = ("tf_efficientnet_lite0",)
DEFAULT_ZOO = ("resnet-large", "resnet-small", "convnext-small", "convnext-large",
               "mobilenetv3-small", "mobilenetv3-large", "vit-small", "vit-large", "deit-small",
               "mixer-small", "mixer-large")
TWIN_PLAIN = "resnet-large"
TWIN_STEPS = (STEPS, 2 * STEPS)
"""Twin step budgets compared with the plain model: the zoo's (:data:`lielib.book.zoo.STEPS`)
and twice it, for a twin that reaches the plain model's accuracy."""


class NothingMeasuredError(RuntimeError):
    """Every model was skipped, so no table was written; the message lists the reasons."""


def _check_args(zoo_models, actions, only, stencils, counts: dict[str, int]) -> None:
    from lielib import get_action

    from .. import zoo

    unknown = [o for o in only if o not in EXPERIMENTS]
    if not only or unknown:
        raise ValueError(f"only= must name experiments from {EXPERIMENTS}, got {list(only)}")
    if not actions:
        raise ValueError(f"no actions given; choose from {ACTIONS} (or lielib.list_actions())")
    for a in actions:
        get_action(a)  # raises, naming the available actions
    if not stencils or any(s not in STENCILS for s in stencils):
        raise ValueError(f"stencils must be among {STENCILS}, got {list(stencils)}")
    bad = [n for n in zoo_models if n not in zoo.zoo_names()]
    if bad:
        raise ValueError(f"unknown zoo models {bad}; the zoo has: {', '.join(zoo.zoo_names())}")
    for name, n in counts.items():
        for v in n if isinstance(n, tuple) else (n,):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be positive integers, got {n!r}"
                                 if isinstance(n, tuple) else
                                 f"{name} must be a positive integer, got {n!r}")


def zoo_images(n: int, seed: int, offset: int = 0):
    """``n`` seeded Fashion-MNIST test images, preprocessed as the zoo is trained, and labels."""
    from .. import zoo
    from ..data import load_idx, seeded_indices

    images, labels = load_idx("fashion-mnist", "test")
    idx = seeded_indices(len(images), n + offset, seed)[offset:]
    return zoo.preprocess(images[idx]), labels[idx]


def _imagenet(name: str, n: int, seed: int):
    from ..data import load_photos
    from ..models import load_model

    model, info = load_model(name)
    batch = load_photos(n, data_config=info.data_config, seed=seed)
    return model, batch.images, {"model": name, "weights": info.source, "dataset": "photos",
                                 "family": info.family,
                                 "input_size": int(batch.images.shape[-1])}


def _zoo(name: str, n: int, seed: int):
    from .. import zoo

    model, record = zoo.load_trained(name)
    x, _ = zoo_images(n, seed)
    return model, x, {"model": f"zoo:{name}", "weights": f"zoo checkpoint (test acc "
                      f"{record.get('test_acc')})", "dataset": "fashion-mnist",
                      "family": model_family(zoo.get_entry(name).arch), "input_size": 32}


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


def _methods(model, x, info, num_probes, seed) -> pd.DataFrame:
    ex = layerwise_lee(model, x, "translate_x", stencil="paper")
    pr = layerwise_lee(model, x, "translate_x", method="probes", num_probes=num_probes, seed=seed,
                       stencil="paper")
    sh = layerwise_shift_error(model, x)
    keys = ["module", "module_type", "layer_kind", "order", "call", "downsampling"]
    out = ex.groupby(keys, as_index=False).value.mean().rename(columns={"value": "exact"})
    idx = pd.MultiIndex.from_frame(out[keys])
    out["probes"] = pr.groupby(keys).value.mean().reindex(idx).to_numpy()
    out["shift"] = sh.groupby(keys).value.mean().reindex(idx).to_numpy()
    out["num_probes"] = num_probes
    return out.assign(**info)


def _twin(n: int, actions, seeds, steps, seed: int, skipped: list[str]):
    from ..blurpool import load_twin
    from .twin import load_plain, measure_variant, twin_ratios

    x, _ = zoo_images(n, seed)
    frames, models = [], []
    for s in seeds:
        try:
            plain, prec = load_plain(TWIN_PLAIN, s)
        except NotAvailableError as err:
            record_skip(skipped, f"twin pair seed {s}", err)
            continue
        plain_rows = measure_variant(plain, x, actions, "plain", seed=seed)
        models.append({"variant": "plain", "twin_seed": s, "steps": prec.get("step"),
                       "arch": prec["arch"], "params": prec["params"],
                       "test_acc": prec["test_acc"], "n_test": prec["n_test"]})
        for k in steps:
            try:
                twin, trec = load_twin(TWIN_PLAIN, s, k)
            except NotAvailableError as err:
                record_skip(skipped, f"twin pair seed {s}, {k} steps", err)
                continue
            frames.append(pd.concat([plain_rows, measure_variant(twin, x, actions, "blurall",
                                                                 seed=seed)], ignore_index=True)
                          .assign(twin_seed=s, twin_steps=k))
            models.append({"variant": "blurall", "twin_seed": s, "steps": trec.get("step"),
                           "arch": trec["arch"], "params": trec["params"],
                           "test_acc": trec["test_acc"], "n_test": trec["n_test"]})
    if not frames:
        return None
    per = pd.concat(frames, ignore_index=True)
    return per, twin_ratios(per, seed=seed), pd.DataFrame(models)


def run(out: str | Path | None = None, *, imagenet: tuple[str, ...] = DEFAULT_IMAGENET,
        zoo_models: tuple[str, ...] = DEFAULT_ZOO, actions: tuple[str, ...] = ACTIONS,
        stencils: tuple[str, ...] = STENCILS, num_photos: int = 20, num_zoo_images: int = 20,
        num_probes: int = 100, num_twin_images: int = 64, twin_seeds: tuple[int, ...] = (0, 1, 2),
        twin_steps: tuple[int, ...] = TWIN_STEPS,
        methods_models: tuple[str, ...] = ("zoo:resnet-large", "tf_efficientnet_lite0"),
        seed: int = 0, only: tuple[str, ...] = EXPERIMENTS) -> list[Path]:
    """Run the experiments and write the tables; returns the written paths.

    Raises:
        ValueError: an unknown experiment, action, stencil or zoo model, or a count below 1.
        NothingMeasuredError: every model was skipped (the reasons are in the message).
    """
    _check_args(zoo_models, actions, only, stencils, {
        "num_photos": num_photos, "num_probes": num_probes, "num_zoo_images": num_zoo_images,
        "num_twin_images": num_twin_images, "twin_steps": tuple(twin_steps)})
    out = Path(out) if out is not None else ROOT / "results" / "aliasing"
    command = " ".join(["python -m lielib.book.aliasing", *sys.argv[1:]]) if (
        "aliasing" in sys.argv[0]) else "python -m lielib.book.aliasing"
    written, skipped, methods = [], [], []
    common = {"command": command, "seed": seed, "actions": list(actions)}
    wanted = {"layerwise", "methods"} & set(only)
    for model, x, info in _load_all(imagenet if wanted else (), zoo_models if wanted else (),
                                    num_photos, num_zoo_images, seed, skipped):
        if "layerwise" in only:
            t0 = time.time()
            mods, imgs = budget_tables(model, x, info, actions, stencils)
            meta = metadata(**common, model=info["model"], stencils=list(stencils),
                            num_images=int(x.shape[0]), seconds=round(time.time() - t0, 1))
            base = out / "layerwise" / safe_name(info["model"].replace(":", "-"))
            written.append(write_table(Path(f"{base}-modules.csv"), mods, meta))
            written.append(write_table(Path(f"{base}-images.csv"), imgs, meta))
            print(f"{info['model']}: {meta['seconds']} s", flush=True)
        if "methods" in only and info["model"] in methods_models:
            methods.append(_methods(model, x[:1], info, num_probes, seed))
    if methods:
        df = pd.concat(methods, ignore_index=True)
        written.append(write_table(out / "methods.csv", df, metadata(
            **common, skipped=skipped, models=sorted(df.model.unique()), num_probes=num_probes)))
    if "twin" in only:
        res = _twin(num_twin_images, actions, twin_seeds, twin_steps, seed, skipped)
        if res is not None:
            meta = metadata(**common, skipped=skipped, plain=f"zoo:{TWIN_PLAIN}",
                            twin_seeds=list(twin_seeds), twin_steps=list(twin_steps),
                            num_images=num_twin_images)
            for name, df in zip(("twin-images", "twin-ratios", "twin-models"), res):
                written.append(write_table(out / f"{name}.csv", df, meta))
    if not written:
        reasons = "\n  ".join(skipped) or "no model was selected for the experiments asked"
        raise NothingMeasuredError(f"nothing measured, no table written to {out}; "
                                   f"skipped:\n  {reasons}")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lielib.book.aliasing",
                                 description="Layer-wise aliasing experiments -> results/aliasing")
    ap.add_argument("--imagenet", nargs="*", default=list(DEFAULT_IMAGENET),
                    help="ImageNet models (load_model names), measured on the offline photos")
    ap.add_argument("--zoo", nargs="*", default=list(DEFAULT_ZOO), help="trained zoo models")
    ap.add_argument("--actions", nargs="+", default=list(ACTIONS))
    ap.add_argument("--stencils", nargs="+", default=list(STENCILS), choices=STENCILS)
    ap.add_argument("--num-photos", type=int, default=20)
    ap.add_argument("--num-zoo-images", type=int, default=20)
    ap.add_argument("--num-twin-images", type=int, default=64)
    ap.add_argument("--twin-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--num-probes", type=int, default=100)
    ap.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-twin", action="store_true",
                    help=f"train the fully blurred twin of zoo:{TWIN_PLAIN} (and, for seeds other "
                    "than 0, the plain model) with --twin-seed and exit")
    ap.add_argument("--twin-seed", type=int, default=0, help="the seed --train-twin trains")
    ap.add_argument("--twin-steps", type=int, nargs="+", default=list(TWIN_STEPS),
                    help="step budgets of the twins: --train-twin trains the first, the twin "
                    "comparison measures all that are trained (default: the zoo's and twice it)")
    a = ap.parse_args(argv)
    if a.train_twin:
        from .twin import train_twin

        if any(k < 1 for k in a.twin_steps):
            ap.error(f"twin_steps must be positive integers, got {tuple(a.twin_steps)!r}")

        for path in train_twin(TWIN_PLAIN, seed=a.twin_seed, steps=a.twin_steps[0]):
            print(path)
        return 0
    kwargs = {"imagenet": tuple(a.imagenet), "zoo_models": tuple(a.zoo),
              "actions": tuple(a.actions), "stencils": tuple(a.stencils),
              "num_photos": a.num_photos, "num_zoo_images": a.num_zoo_images,
              "num_twin_images": a.num_twin_images, "twin_seeds": tuple(a.twin_seeds),
              "twin_steps": tuple(a.twin_steps),
              "num_probes": a.num_probes, "seed": a.seed, "only": tuple(a.only)}
    try:
        _check_args(kwargs["zoo_models"], kwargs["actions"], kwargs["only"], kwargs["stencils"],
                    {k: kwargs[k] for k in ("num_photos", "num_probes", "num_zoo_images",
                                            "num_twin_images", "twin_steps")})
        out = check_output(a.out or ROOT / "results" / "aliasing", "--out")
    except ValueError as err:  # OutputPathError is one
        ap.error(str(err))
    try:
        paths = run(out, **kwargs)
    except NothingMeasuredError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0
