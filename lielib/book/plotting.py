"""One look for every figure of the book: theme, colour-blind-safe palettes, label maps.

Colours come from the Okabe-Ito palette (distinguishable under the common forms of colour
blindness), with grey as the fallback for anything unnamed. Model families (the one family
map, :func:`lielib.book.models.model_family`) and layer kinds each get a fixed colour, so the
same family has the same colour in every chapter.
Signed images (tangents, Lie derivatives) use the diverging ColorBrewer map ``RdBu_r``
with limits symmetric about zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib as mpl
import numpy as np

from .models import FAMILIES, model_family
from .results import atomic_path

__all__ = [
    "ACTION_LABELS",
    "DIVERGING_CMAP",
    "FAMILY_PALETTE",
    "KIND_ORDER",
    "LAYER_KIND_PALETTE",
    "OKABE_ITO",
    "TOL_EXTRA",
    "action_label",
    "family_color",
    "family_label",
    "imshow_signed",
    "kind_color",
    "save_figure",
    "stacked_cumulative",
    "use_theme",
]

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO: dict[str, str] = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
    "grey": "#999999",
}

FAMILY_PALETTE: dict[str, str] = {
    "cnn": OKABE_ITO["blue"],
    "vit": OKABE_ITO["vermillion"],
    "mixer": OKABE_ITO["bluish_green"],
    "hybrid": OKABE_ITO["reddish_purple"],
    "other": OKABE_ITO["grey"],
}
"""Colour per model family, keyed on :data:`lielib.book.models.FAMILIES`."""

TOL_EXTRA: dict[str, str] = {"green": "#117733", "wine": "#882255"}
"""Two colours of Paul Tol's colour-blind-safe muted scheme, for palettes past Okabe-Ito's."""

LAYER_KIND_PALETTE: dict[str, str] = {
    "activation": OKABE_ITO["vermillion"],
    "conv": OKABE_ITO["blue"],
    "linear": OKABE_ITO["bluish_green"],
    "attention": OKABE_ITO["reddish_purple"],
    "norm": OKABE_ITO["orange"],
    "pool": OKABE_ITO["sky_blue"],
    "embed": OKABE_ITO["yellow"],
    "mlp": TOL_EXTRA["green"],
    "block": TOL_EXTRA["wine"],
    "residual": OKABE_ITO["black"],
    "other": OKABE_ITO["grey"],
}
"""Colour per layer kind (layer-wise decompositions); ``"other"`` is the fallback."""

KIND_ORDER: tuple[str, ...] = ("embed", "conv", "linear", "attention", "mlp", "norm", "activation",
                               "pool", "block", "other", "residual")
"""The order in which layer kinds are stacked and listed in legends."""

ACTION_LABELS: dict[str, str] = {
    "translate_x": "Translation (x)",
    "translate_y": "Translation (y)",
    "rotate": "Rotation",
    "scale": "Scaling",
    "shear_x": "Shear (x)",
    "shear_y": "Shear (y)",
    "stretch_x": "Stretch (x)",
    "stretch_y": "Stretch (y)",
    "hyperbolic_rotate": "Hyperbolic rotation",
    "saturate": "Saturation (intensity)",
}
"""Display names of the ten actions of :func:`lielib.list_actions`."""

DIVERGING_CMAP = "RdBu_r"


def family_color(name: str) -> str:
    """Hex colour of a model family, or of a model name through :func:`model_family`."""
    return FAMILY_PALETTE[model_family(name)]


def family_label(name: str) -> str:
    """Display name of a model family, or of a model name's family (``"vit"`` -> ``"ViT"``)."""
    return FAMILIES[model_family(name)]


def kind_color(kind: str) -> str:
    """Hex colour of a layer kind (grey for a kind the palette does not name)."""
    return LAYER_KIND_PALETTE.get(kind, LAYER_KIND_PALETTE["other"])


def action_label(name: str) -> str:
    """Pretty name of an action; unknown names are returned unchanged."""
    return ACTION_LABELS.get(name, name)


def use_theme(*, context: str = "notebook") -> None:
    """Apply the book's one theme: seaborn ``whitegrid``, Okabe-Ito colour cycle.

    Call once at the top of a chapter; it only changes matplotlib's rcParams.
    """
    import seaborn as sns

    cycle = [OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "orange",
                                     "reddish_purple", "sky_blue", "black", "yellow")]
    sns.set_theme(context=context, style="whitegrid", palette=cycle, font_scale=0.95)
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titleweight": "bold",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.cmap": "viridis",
            "legend.frameon": False,
        }
    )


def imshow_signed(ax, values, *, vmax: float | None = None, quantile: float = 0.99):
    """Show a signed 2-D array with a diverging map and limits symmetric about 0.

    Args:
        ax: a matplotlib ``Axes``.
        values: ``(H, W)`` array or tensor.
        vmax: colour limit; the ``quantile`` of ``|values|`` when omitted (robust to a
            few extreme pixels).

    Returns:
        The ``AxesImage``.
    """
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"imshow_signed needs a 2-D array (H, W), got shape {arr.shape}")
    if vmax is None:
        vmax = float(np.quantile(np.abs(arr), quantile)) or 1.0
    im = ax.imshow(arr, cmap=DIVERGING_CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return im


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save ``fig`` atomically (temporary file + ``os.replace``); format from the suffix."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or None, **kwargs)
    return Path(path)


def stacked_cumulative(ax, modules, *, column: str = "value", legend: bool = True) -> list[str]:
    """The paper's Figure 1 centre for one model: cumulative error by layer, stacked by kind.

    ``modules`` holds one row per module with ``order`` (execution order), ``layer_kind`` and
    ``column`` (a module's contribution, e.g. its squared term ``||c_m||^2``). Contributions
    are divided by their sum, so the top edge climbs from 0 to 1 along the depth; the band
    of each kind (colour of :func:`kind_color`) is that kind's share accumulated so far.

    Returns:
        The kinds drawn, bottom to top.
    """
    sub = modules.sort_values("order")
    values = np.asarray(sub[column], dtype=float)
    total = values.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError(f"stacked_cumulative needs a positive total of {column!r}, got {total}")
    kinds_here = list(sub["layer_kind"])
    kinds = [k for k in KIND_ORDER if k in kinds_here]
    kinds += sorted(set(kinds_here) - set(kinds))
    # x = 0 .. N; the band's value on (j - 1, j] includes module j (step "pre")
    layer = np.arange(0, len(sub) + 1)
    bands = [np.concatenate([[0.0], np.cumsum(np.where(np.asarray(kinds_here) == k,
                                                        values / total, 0.0))]) for k in kinds]
    ax.stackplot(layer, bands, colors=[kind_color(k) for k in kinds], labels=kinds,
                 step="pre", linewidth=0)
    ax.set_xlim(0, len(sub))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel("cumulative share of error")
    if legend:
        ax.legend(loc="upper left", fontsize=8, handlelength=1.0)
    return kinds
