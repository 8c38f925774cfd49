"""The row of the rotated-MNIST chapter, from ``results/rotated_mnist/epochs.csv``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..results import read_table
from . import Claim, claim, rel_paths

__all__ = ["rotation_change"]

EPOCHS = "rotated_mnist/epochs.csv"


def rotation_change(results: Path, variant: str = "mae") -> dict[str, float]:
    """Rotation and translation LEE of ``variant`` after the first and the last epoch.

    Returns ``rot_first``, ``rot_last``, ``tr_first``, ``tr_last``, ``epochs`` and
    ``lee_size`` (the digits averaged), as the chapter's summary table.
    """
    table, meta = read_table(results / EPOCHS)
    rows = table[table.variant == variant].set_index("epoch")
    first = rows.loc[1] if 1 in rows.index else rows.iloc[0]
    last = rows.iloc[-1]
    return {"rot_first": float(first.lee_rotate), "rot_last": float(last.lee_rotate),
            "tr_first": float(first.lee_translate), "tr_last": float(last.lee_translate),
            "epochs": int(rows.index.max()),
            "lee_size": int(meta.get("config", {}).get("lee_size", 0)) or None}


@claim("rotated-mnist", source="rotated-MNIST experiment", chapter="rotated_mnist",
       section="Accuracy and Lie derivatives through fine-tuning",
       paper="A ViT pretrained as a masked autoencoder learns rotation equivariance when "
             "fine-tuned on rotated MNIST: its rotation LEE falls")
def _rotated_mnist(results: Path, base: Claim) -> Claim:
    c = rotation_change(results)
    ratio = c["rot_last"] / c["rot_first"]
    verdict = "not reproduced" if ratio >= 1 else "partly"
    return replace(base, value=ratio, n=c["lee_size"], verdict=verdict,
                   files=rel_paths(results, EPOCHS),
                   glued=(("lee_rot1_mae", c["rot_first"]), ("lee_rot_last_mae", c["rot_last"])),
                   measured=(
                       f"MAE ViT, rotation LEE after epoch {c['epochs']} / after epoch 1: "
                       f"{ratio:.2f} ({c['rot_first']:.3g} to {c['rot_last']:.3g}; translation "
                       f"{c['tr_first']:.3g} to {c['tr_last']:.3g}), mean over n = {c['lee_size']} "
                       "digits. The committed table holds means only, so no interval; CPU scale "
                       f"({c['epochs']} epochs, not 100); being redone with per-digit intervals."))
