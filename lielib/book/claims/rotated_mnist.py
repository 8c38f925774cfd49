"""The row of the rotated-MNIST chapter, from ``results/rotated_mnist/<preset>/contrasts.csv``.

The contrast is the chapter's: the paired (same digits) difference of the per-digit log
ratio of rotation to translation sensitivity, last epoch minus epoch 1, with its 95%
bootstrap interval; negative means rotation became less sensitive relative to
translation as the model trained on rotated digits.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..results import MissingResultsError
from . import Claim, claim, fmt_ci, read_results, rel_paths

__all__ = ["PRESETS", "contrasts_path"]

PRESETS = ("full", "cpu")
"""The runs the chapter shows, in order of preference (the first one that finished)."""
VARIANT = "mae"
LABELS = {"lee": "raw LEE", "rho": "sensitivity ratio ρ"}


def contrasts_path(results: Path) -> str:
    """``rotated_mnist/<preset>/contrasts.csv`` of the first finished preset of :data:`PRESETS`."""
    for name in PRESETS:
        folder = results / "rotated_mnist" / name
        if (folder / "final.csv").is_file() and (folder / "contrasts.csv").is_file():
            return f"rotated_mnist/{name}/contrasts.csv"
    raise MissingResultsError("no finished rotated-MNIST run under results/rotated_mnist/")


@claim("rotated-mnist", source="rotated-MNIST experiment", chapter="rotated_mnist",
       section="Does training on rotated digits lower rotation LEE relative to translation LEE?",
       paper="A ViT pretrained as a masked autoencoder learns rotation equivariance when "
             "fine-tuned on rotated MNIST: its rotation LEE falls")
def _rotated_mnist(results: Path, base: Claim) -> Claim:
    rel = contrasts_path(results)
    con = read_results(results, rel)
    train = con[(con.question == "training") & con.a.str.startswith(f"{VARIANT}@")]
    part = train[train.b.eq(f"{VARIANT}@1")]
    if part.empty:
        raise MissingResultsError(f"{rel} holds no training contrast of the {VARIANT} variant")
    verdicts, texts = [], []
    for since in ("1", "0"):
        for r in train[train.b.eq(f"{VARIANT}@{since}")].itertuples():
            v = "reproduced" if r.high < 0 else "reversed" if r.low > 0 else "not reproduced"
            verdicts.append(v)
            texts.append(f"{LABELS.get(r.metric, r.metric)} from epoch {since} "
                         f"{fmt_ci(r.difference, r.low, r.high)} ({v})")
    kinds = set(verdicts)
    verdict = kinds.pop() if len(kinds) == 1 else "partly"
    lee = part[part.metric == "lee"].iloc[0]
    return replace(base, value=float(lee.difference), lo=float(lee.low), hi=float(lee.high),
                   n=int(lee.n), verdict=verdict, files=rel_paths(results, rel), measured=(
                       f"MAE-pretrained ViT, last epoch minus epoch 1 and minus epoch 0: paired "
                       f"difference of the per-digit log(rotation / translation), n = "
                       f"{int(lee.n)} digits: " + "; ".join(texts) + ". Reproduced when every "
                       f"interval is below 0 ({rel.split('/')[1]} preset, not the paper's 100 "
                       "epochs)."))
