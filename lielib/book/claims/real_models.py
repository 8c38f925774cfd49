"""Rows of the real-models chapter: the out-of-distribution gap and the size trend of
EfficientNet-Lite0/1/2, from ``results/real_models/lee.csv`` (:mod:`lielib.book.ood`).

Both rows judge raw LEE and its scale-free companion, the sensitivity ratio ``rho``
(:func:`lielib.sensitivity_ratio`), by the same rule; when the two disagree the verdict
is "partly" and the text says which holds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from ..ood import METRICS, ood_gap, size_table
from . import Claim, claim, combine_verdicts, fmt_ci, read_results, rel_paths, verdict_from_interval

__all__ = ["ACTION", "LEE_TABLE", "METRIC_LABELS", "MIN_RECOGNISED", "RECOGNISED", "glue_name",
           "real_models_tables", "recognised_photos"]

LEE_TABLE = "real_models/lee.csv"
ACTION = "translate"
METRIC_LABELS = {"lee": "raw LEE", "sensitivity_ratio": "sensitivity ratio ρ"}


def real_models_tables(results: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(per_image, gap, size)``: the table and its two summaries for every metric."""
    table = read_results(results, LEE_TABLE)
    metrics = [m for m in METRICS if m in set(table.metric)]
    gap = pd.concat([ood_gap(table, metric=m) for m in metrics], ignore_index=True)
    size = pd.concat([size_table(table, metric=m) for m in metrics], ignore_index=True)
    return table, gap, size


def glue_name(kind: str, metric: str, model: str = "", set_name: str = "") -> str:
    """The chapter's glue name of a number, e.g. ``gap_lee_tf_efficientnet_lite0_mnist``."""
    parts = [kind, metric, model.split(".")[0], set_name.replace("-", "_")]
    return "_".join(p for p in parts if p)


def _combine(verdicts: dict[str, str]) -> str:
    values = set(verdicts.values())
    return values.pop() if len(values) == 1 else "partly"


def _short(model: str) -> str:
    return model.split(".")[0].removeprefix("tf_efficientnet_").replace("lite", "Lite")


RECOGNISED = 0.5
"""A photo counts as recognised by a model when the model's top-1 softmax probability on
it is at least this (more than half the probability on one class). Fixed before the
verdict was computed; the photos carry no labels, so recognition cannot be checked
against a ground truth."""
MIN_RECOGNISED = 5
"""A model recognising fewer photos than this is not judged (no interval worth the name)."""


def recognised_photos(table: pd.DataFrame, threshold: float = RECOGNISED) -> dict[str, list[str]]:
    """Per model, the in-distribution photos with top-1 probability ``>= threshold``."""
    photos = table[table.distribution == "in"].drop_duplicates(["model", "image"])
    return {m: sorted(g.loc[g.confidence >= threshold, "image"]) for m, g in
            photos.groupby("model", sort=True)}


@claim("ood", source="out-of-distribution analysis", chapter="real_models",
       section="The out-of-distribution gap",
       paper="LEE is higher on out-of-distribution images than on in-distribution ones")
def _ood(results: Path, base: Claim) -> Claim:
    from ..ood import ood_gap

    table, gap_all, _ = real_models_tables(results)
    glued = [(glue_name("gap", r.metric, r.model, r.set), float(r.ratio))
             for r in gap_all[gap_all.action == ACTION].itertuples()]
    seen = recognised_photos(table)
    judged = {m: imgs for m, imgs in seen.items() if len(imgs) >= MIN_RECOGNISED}
    listing = "; ".join(f"{_short(m)} {len(imgs)} ({', '.join(i.rsplit('.', 1)[0] for i in imgs)})"
                        for m, imgs in seen.items())
    rule = (f"Recognised: top-1 probability at least {RECOGNISED:g}, fixed before the verdict; a "
            f"model recognising fewer than {MIN_RECOGNISED} photos is not judged. Photos "
            f"recognised per model: {listing}.")
    if not judged:
        return replace(base, verdict="not testable offline", files=rel_paths(results, LEE_TABLE),
                       glued=tuple(glued), measured=(
                           "Not testable offline: no model recognises enough of the offline "
                           "photos to stand for its training distribution. " + rule))
    keep = table[(table.distribution != "in") | table.apply(
        lambda r: r.image in judged.get(r.model, ()), axis=1)]
    keep = keep[keep.model.isin(judged)]
    metrics = [m for m in METRICS if m in set(keep.metric)]
    gap = pd.concat([ood_gap(keep, metric=m) for m in metrics], ignore_index=True)
    gap = gap[gap.action == ACTION]
    per, texts = {}, []
    for metric, g in gap.groupby("metric", sort=False):
        vs = [verdict_from_interval(r.ratio_lo, r.ratio_hi, 1, null=1.0) for r in g.itertuples()]
        per[metric] = combine_verdicts(vs)
        parts = "; ".join(f"{_short(r.model)} {r.set} {fmt_ci(r.ratio, r.ratio_lo, r.ratio_hi)} ({v})"
                          for r, v in zip(g.itertuples(), vs, strict=True))
        texts.append(f"{METRIC_LABELS.get(metric, metric)}: {parts}")
    lee = gap[gap.metric == "lee"].sort_values("ratio").iloc[0]
    return replace(base, value=float(lee.ratio), lo=float(lee.ratio_lo), hi=float(lee.ratio_hi),
                   n=int(lee.n_in), verdict=combine_verdicts(list(per.values())),
                   files=rel_paths(results, LEE_TABLE), glued=tuple(glued), measured=(
                       "Translation, mean out / in distribution, in distribution = the photos "
                       f"each model recognises, {int(lee.n_out)} images per out-of-distribution "
                       "set (unpaired bootstrap). " + ". ".join(texts) + ". " + rule + " Mean "
                       f"top-1 probability on those photos {gap.confidence_in.mean():.2f}, out of "
                       f"distribution {gap.confidence_out.mean():.2f}. Rule: per model, set and "
                       "metric, reproduced when the interval is above 1, reversed when below; "
                       "combined."))


@claim("size", source="abstract; trends with model size", chapter="real_models",
       section="Size on real models",
       paper="Within a family, larger and more accurate models are more equivariant")
def _size(results: Path, base: Claim) -> Claim:
    _, _, size = real_models_tables(results)
    size = size[size.action == ACTION]
    verdicts, texts, glued = {}, [], []
    for metric, s in size.groupby("metric", sort=False):
        s = s.sort_values("params")
        big = s.iloc[-1]
        steps = s["mean"].diff().dropna()
        verdicts[metric] = ("partly" if (steps < 0).all() and big.ratio_hi < 1 else
                            "reversed" if (steps > 0).all() and big.ratio_lo > 1 else "not reproduced")
        means = ", ".join(f"{_short(r.model)} {fmt_ci(r.mean, r.lo, r.hi, 3)}" for r in s.itertuples())
        texts.append(f"{METRIC_LABELS.get(metric, metric)}: {means}; Lite2 / Lite0 "
                     f"{fmt_ci(big.ratio_to_smallest, big.ratio_lo, big.ratio_hi)} ({verdicts[metric]})")
        glued.append((glue_name("size_ratio", metric), float(big.ratio_to_smallest)))
    lee = size[size.metric == "lee"].sort_values("params").iloc[-1]
    verdict = _combine(verdicts)
    if verdict == "partly" and "partly" not in verdicts.values():
        verdict = "not reproduced"  # one metric reversed, the other flat: no support either way
    info = size[size.metric == "lee"].sort_values("params")
    models = ", ".join(f"{_short(r.model)} {r.params / 1e6:.1f} M, {r.top1:.1f}%"
                       for r in info.itertuples())
    return replace(base, value=float(lee.ratio_to_smallest), lo=float(lee.ratio_lo),
                   hi=float(lee.ratio_hi), n=int(lee.n), verdict=verdict,
                   files=rel_paths(results, LEE_TABLE), glued=tuple(glued), measured=(
                       f"EfficientNet-Lite ({models} ImageNet top-1), translation, the same "
                       f"n = {int(lee.n)} photos (paired bootstrap). " + ". ".join(texts) + ". "
                       "Rule: three models of one family cannot establish a trend, so at best partly, "
                       "when the metric falls at each step and Lite2 / Lite0 is below 1."))
