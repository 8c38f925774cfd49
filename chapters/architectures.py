# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Equivariance across architectures
#
# **Claim.** Across hundreds of ImageNet models the paper finds that the local equivariance
# error falls as accuracy rises, whatever the architecture: a model's LEE for translation
# is better predicted by its accuracy than by whether it is a CNN, a vision transformer or
# an MLP-Mixer (Figure 1 right of {cite:p}`gruver2023lie`, $R^2 = 0.333$), and
# transformers can end up *more* translation-equivariant than CNNs, although nothing in
# their design builds translation equivariance in. This chapter runs the same measurement
# on a model zoo, one model at a time through the sweep command, and asks the same
# questions of it: does LEE fall with accuracy, for which transformations, within and
# across families? Does it agree with the sample-based metrics? And, beyond the paper, is
# equivariance *learned*: how does each architecture's LEE at initialisation compare
# with its LEE after training?
#
# Without ImageNet and timm's weights (this book's default), the zoo is a mini-zoo of
# {glue:text}`n_models` models (timm's ResNets, ConvNeXts, EfficientNet, MobileNets,
# DenseNet, ViTs and DeiT with patch sizes 2 to 16, MLP-Mixers, ResMLP and gMLP, scaled to
# 32 px) trained here on Fashion-MNIST {cite:p}`xiao2017fashion` with one shared recipe
# (`lielib.book.train`) and several training budgets, so that accuracy spreads; the three EfficientNet-Lite models with real ImageNet weights are
# measured on the offline photo set beside them. With an ImageNet folder the parameters
# below select the paper's 83 core models instead; nothing else changes.

# %% tags=["parameters"]
model_set = "zoo"  # "zoo" (offline default) or "paper" (83 ImageNet models)
init_set = "zoo-init"  # the same architectures at initialisation ("" to skip)
photo_set = "lite"  # ImageNet EfficientNet-Lite models on the photo set ("" to skip)
imagenet = ""  # ImageNet validation folder (the paper set, with recompute)
results_dir = "results/architectures"  # merged sweep tables <set>.csv, relative to the repo
recompute = False  # True: run the sweep for models whose results are missing (slow), then merge
actions = ["translate_x", "translate_y", "rotate", "shear_x", "shear_y", "scale", "saturate"]

# %% tags=["hide-input"]
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from lielib.book.modelsets import MODEL_SETS, fit_log_linear, per_model
from lielib.book.paths import repo_root
from lielib.book.plotting import action_label, family_color, family_label, use_theme
from lielib.book.results import MissingResultsError, provenance_markdown, read_or_compute

ROOT = repo_root()
RESULTS = (ROOT / results_dir).resolve()
CHAPTER = "chapters/workers/measure_model.py"
use_theme()
if model_set not in MODEL_SETS:
    raise ValueError(f"unknown model_set {model_set!r}; use one of {sorted(MODEL_SETS)}")


def how_to(set_name: str) -> str:
    """The commands that produce ``<results_dir>/<set_name>.csv``."""
    extra = " -p imagenet /path/to/imagenet/val" if set_name == "paper" else ""
    train = "python -m lielib.book.train --zoo && " if set_name == "zoo" else ""
    out = Path(results_dir) / set_name
    return (f"{train}python -m lielib.book.sweep {CHAPTER} --models {set_name}{extra} --out {out} && "
            f"python -m lielib.book.sweep merge {out} --models {set_name}")


def load(set_name: str) -> tuple[pd.DataFrame, dict, Path]:
    """The merged sweep table of ``set_name`` (running the sweep first if asked)."""
    path = RESULTS / f"{set_name}.csv"

    def compute() -> None:
        from lielib.book.sweep import merge, run_sweep

        params = {"imagenet": imagenet} if set_name == "paper" else {}
        run_sweep(ROOT / CHAPTER, set_name, out=RESULTS / set_name, params=params)
        merge(RESULTS / set_name, set_name=set_name)

    table, meta = read_or_compute(path, compute, recompute=recompute, how=how_to(set_name))
    return table, meta, path


try:
    raw, raw_meta, main_path = load(model_set)
except MissingResultsError as err:
    display(Markdown(f"```{{warning}}\nThe results of the `{model_set}` set are missing: {err}\n```"))
    raise
models = per_model(raw)
lee_cols = [f"lee_{a}" for a in actions]
acc_kind = models["accuracy_kind"].iloc[0]
glue("n_models", len(models), display=False)
glue("n_images", int(raw.groupby("model").size().iloc[0]), display=False)
glue("acc_kind", acc_kind, display=False)
glue("acc_min", float(100 * models["accuracy"].min()), display=False)
glue("acc_max", float(100 * models["accuracy"].max()), display=False)

# %% [markdown]
# ## The zoo
#
# {glue:text}`n_models` models, each measured on the same {glue:text}`n_images` seeded
# images; accuracy ({glue:text}`acc_kind`) runs from {glue:text}`acc_min:.1f`% to
# {glue:text}`acc_max:.1f`%. LEE is the mean over images of
# $\frac{1}{K}\sum_c |L_G\, p_c(x)|$ for the softmax output $p$.

# %% tags=["hide-input"]
shown = models[["model", "family", "arch", "params", "accuracy", *lee_cols]].copy()
shown["params"] = shown["params"] / 1e6
shown = shown.rename(columns={"params": "params (M)", **{c: c.removeprefix("lee_") for c in lee_cols}})
display(shown.sort_values("accuracy").style.format(precision=4).format(
    {"params (M)": "{:.2f}", "accuracy": "{:.3f}"}).hide(axis="index"))

# %% [markdown]
# ## LEE against accuracy (Figure 1, right)
#
# Each point is a model, coloured by family and sized by its number of parameters; the
# line is the least-squares fit of $\log_{10}\mathrm{LEE} = a + b \cdot \mathrm{accuracy}$
# over all models. For translation (the mean of the $x$ and $y$ LEE), the fit has slope
# $b =$ {glue:text}`fit_translate_slope:.2f` per unit of accuracy and
# $R^2 =$ {glue:text}`fit_translate_r2:.3f`, against the paper's $0.333$ on ImageNet.

# %% tags=["hide-input"]
def sizes(params: pd.Series) -> np.ndarray:
    """Marker areas growing with log parameter count."""
    lp = np.log10(params.to_numpy(dtype=float))
    return 15 + 120 * (lp - lp.min()) / max(lp.max() - lp.min(), 1e-9)


def scatter_fit(ax, frame: pd.DataFrame, col: str, title: str) -> dict[str, float]:
    """LEE vs accuracy, by family, with the log-linear fit; returns the fit."""
    for fam, part in frame.groupby("family"):
        ax.scatter(part["accuracy"], part[col], s=sizes(frame["params"])[part.index],
                   color=family_color(fam), alpha=0.85, edgecolor="white", linewidth=0.5,
                   label=family_label(fam))
    fit = fit_log_linear(frame["accuracy"], frame[col])
    xs = np.linspace(frame["accuracy"].min(), frame["accuracy"].max(), 50)
    ax.plot(xs, 10 ** (fit["intercept"] + fit["slope"] * xs), color="black", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_title(f"{title}  ($R^2$ = {fit['r2']:.2f})", fontsize=10)
    return fit


fits = {}
fig, ax = plt.subplots(figsize=(5.5, 4))
fits["translate"] = scatter_fit(ax, models, "lee_translate", "Translation LEE")
ax.set_xlabel(f"accuracy ({acc_kind})")
ax.set_ylabel("LEE (mean over images)")
ax.legend(title="family", loc="best")
plt.show()

# %% [markdown]
# One panel per transformation. Saturation here is the paper's intensity scaling of the
# normalised input, $x \mapsto e^{t} x$; on Fashion-MNIST's black background it acts on
# the garment's pixels only.

# %% tags=["hide-input"]
ncols = 4
nrows = int(np.ceil(len(actions) / ncols))
fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
for ax, a in zip(axes.flat, actions, strict=False):
    fits[a] = scatter_fit(ax, models, f"lee_{a}", action_label(a))
    ax.set_xlabel("accuracy")
for ax in axes.flat[len(actions):]:
    ax.axis("off")
axes[0, 0].set_ylabel("LEE")
handles, labels = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower right", title="family")
fig.tight_layout()
plt.show()
fit_table = pd.DataFrame(fits).T[["slope", "r2", "n"]].rename_axis("transformation")
fit_table["n"] = fit_table["n"].astype(int)
display(fit_table.style.format({"slope": "{:.2f}", "r2": "{:.3f}"}))
for name, fit in fits.items():
    glue(f"fit_{name}_slope", float(fit["slope"]), display=False)
    glue(f"fit_{name}_r2", float(fit["r2"]), display=False)
negative = [a for a in actions if fits[a]["slope"] < 0]
glue("n_negative", len(negative), display=False)
glue("n_actions", len(actions), display=False)
best = max(actions, key=lambda a: fits[a]["r2"])
glue("best_action", action_label(best), display=False)
glue("best_r2", float(fits[best]["r2"]), display=False)

# %% [markdown]
# The fitted slope is negative, LEE falling with accuracy, for {glue:text}`n_negative` of
# the {glue:text}`n_actions` transformations; the fit explains most for
# {glue:text}`best_action` ($R^2 =$ {glue:text}`best_r2:.3f`). With the paper's
# hundreds of models a weak trend was still clear; a few dozen models can show the sign
# and size of the trend but not pin $R^2$ down to a few hundredths.
#
# ## Families
#
# Median over each family's models of the per-model mean LEE, with the family's accuracy
# range. In the paper, the best transformers matched or beat CNNs on translation.

# %% tags=["hide-input"]
fam = models.groupby("family").agg(
    models=("model", "size"),
    accuracy_min=("accuracy", "min"),
    accuracy_max=("accuracy", "max"),
    params_median_M=("params", lambda p: p.median() / 1e6),
    **{c.removeprefix("lee_"): (c, "median") for c in
       ["lee_translate", *[c for c in lee_cols if not c.startswith("lee_translate_")]]},
)
fam.index = fam.index.map(family_label)
display(fam.style.format(precision=4).format(
    {"accuracy_min": "{:.3f}", "accuracy_max": "{:.3f}", "params_median_M": "{:.2f}"}))
top = models.sort_values("lee_translate").iloc[0]
glue("most_equivariant", top["model"], display=False)
glue("most_equivariant_family", family_label(top["family"]), display=False)
for f in ("cnn", "vit", "mixer"):
    if (models["family"] == f).any():
        glue(f"median_translate_{f}", float(models.loc[models["family"] == f, "lee_translate"].median()),
             display=False)
        glue(f"best_translate_{f}", float(models.loc[models["family"] == f, "lee_translate"].min()),
             display=False)

# %% [markdown]
# The most translation-equivariant model of the zoo is {glue:text}`most_equivariant`
# ({glue:text}`most_equivariant_family`). The best ViT reaches a translation LEE of
# {glue:text}`best_translate_vit:.4f` and the best CNN {glue:text}`best_translate_cnn:.4f`
# (family medians {glue:text}`median_translate_vit:.4f` and
# {glue:text}`median_translate_cnn:.4f`; MLP-Mixers {glue:text}`median_translate_mixer:.4f`).
#
# ## The sample-based metrics against LEE
#
# The same images went through the sample-based metrics of {cite:t}`zhang2019making`
# (shift consistency: how often the predicted class survives integer shifts) and
# {cite:t}`karras2021alias` (EQ-T, EQ-T$_\mathrm{frac}$ and EQ-R: PSNR in dB between the
# softmax outputs of transformed and original images, higher is more equivariant). Each
# is the per-model median over images; the table gives Spearman's rank correlation with
# the matching LEE across models. For consistency and the PSNRs a negative correlation is
# agreement (more equivariant by the metric, smaller LEE); for the finite-difference
# rates, $\frac{1}{K}\sum_c |p_c(T_t x) - p_c(x)| / |t|$ for small sampled $t$, which
# estimate the same derivative at finite $t$, a positive one.

# %% tags=["hide-input"]
pairs = [("consistency", "lee_translate", "shift consistency"),
         ("eq_t", "lee_translate", "EQ-T (dB)"),
         ("eq_t_frac", "lee_translate", "EQ-T frac (dB)"),
         ("eq_r", "lee_rotate", "EQ-R (dB)"),
         ("fd_translate_x", "lee_translate_x", "finite-difference rate, x shift"),
         ("fd_rotate", "lee_rotate", "finite-difference rate, rotation")]
pairs = [p for p in pairs if p[0] in models and p[1] in models]
fig, axes = plt.subplots(1, len(pairs), figsize=(2.9 * len(pairs), 2.8), squeeze=False)
rows = []
for ax, (metric, lee_col, label) in zip(axes[0], pairs, strict=True):
    for f, part in models.groupby("family"):
        ax.scatter(part[lee_col], part[metric].clip(upper=200), color=family_color(f), s=18,
                   label=family_label(f))
    ax.set_xscale("log")
    ax.set_xlabel(action_label(lee_col.removeprefix("lee_")) + " LEE", fontsize=8)
    ax.set_title(label, fontsize=9)
    rho = models[[metric, lee_col]].corr(method="spearman").iloc[0, 1]
    rows.append({"metric": label, "against": lee_col.removeprefix("lee_"), "spearman": rho})
fig.tight_layout()
plt.show()
corr = pd.DataFrame(rows).set_index("metric")
display(corr.style.format({"spearman": "{:.2f}"}))
for (metric, _, _), rho in zip(pairs, corr["spearman"], strict=True):
    glue(f"rho_{metric}", float(rho), display=False)

# %% [markdown]
# Across models, EQ-T agrees with the translation LEE at $\rho =$
# {glue:text}`rho_eq_t:.2f`, EQ-R with the rotation LEE at $\rho =$
# {glue:text}`rho_eq_r:.2f`, and the finite-difference rate along $x$-shifts, the
# finite-$t$ version of the same derivative, at $\rho =$ {glue:text}`rho_fd_translate_x:.2f`.
#
# ## Is equivariance learned? LEE at initialisation and after training
#
# The paper measures trained models only. Here every architecture is also measured at
# the seeded initialisation its training started from, on the same images. A point below
# the diagonal is an architecture whose training reduced its LEE. One caution in reading
# it: a freshly initialised network's softmax output is close to uniform, so every
# derivative of it is small, whatever the architecture; the informative comparisons are
# between architectures (the ratio after / before per family, and whether the ranking at
# initialisation survives training) rather than the absolute levels.

# %% tags=["hide-input"]
init_path = None
if init_set and model_set != "paper":
    init_raw, _, init_path = load(init_set)
    init = per_model(init_raw).set_index("model")
    trained = models.set_index("model")
    both = trained.join(init.add_suffix("_init"), how="inner")
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for ax, a in zip(axes, ["translate", "rotate", "scale"], strict=True):
        col = f"lee_{a}"
        for f, part in both.groupby("family"):
            ax.scatter(part[f"{col}_init"], part[col], color=family_color(f), s=22,
                       label=family_label(f))
        lo = min(both[col].min(), both[f"{col}_init"].min()) / 1.5
        hi = max(both[col].max(), both[f"{col}_init"].max()) * 1.5
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("LEE at initialisation")
        ax.set_title(action_label(a) if a != "translate" else "Translation", fontsize=10)
    axes[0].set_ylabel("LEE after training")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    plt.show()
    ratio = pd.DataFrame({a: both[f"lee_{a}"] / both[f"lee_{a}_init"]
                          for a in ["translate", "rotate", "shear", "scale", "saturate"]})
    ratio.insert(0, "family", both["family"].map(lambda f: family_label(f)))
    ratio.insert(1, "accuracy", both["accuracy"])
    display(ratio.sort_values("accuracy").style.format(precision=2))
    fell = ratio["translate"] < 1
    glue("n_fell", int(fell.sum()), display=False)
    glue("n_pairs", len(ratio), display=False)
    glue("median_ratio_translate", float(ratio["translate"].median()), display=False)
    by_fam = ratio.groupby("family")["translate"].median()
    for f, v in by_fam.items():
        glue(f"ratio_translate_{f}", float(v), display=False)
    rho_ratio = ratio[["accuracy", "translate"]].corr(method="spearman").iloc[0, 1]
    glue("rho_ratio_acc", float(rho_ratio), display=False)
    rho_keep = both[["lee_translate", "lee_translate_init"]].corr(method="spearman").iloc[0, 1]
    glue("rho_init_trained", float(rho_keep), display=False)
    display(Markdown(
        "Training changed the translation LEE by a median factor of "
        f"{ratio['translate'].median():.2f} (after / before); it fell for "
        f"{int(fell.sum())} of {len(ratio)} architectures. By family the median factor is "
        + ", ".join(f"{f} {v:.2f}" for f, v in by_fam.items())
        + f". Across models, the factor's rank correlation with accuracy is {rho_ratio:.2f},"
        " and the rank correlation between the translation LEE at initialisation and after"
        f" training is {rho_keep:.2f}."
    ))

# %% [markdown]
# ## Real ImageNet weights: EfficientNet-Lite on the photo set
#
# The only ImageNet classifiers whose weights install offline are EfficientNet-Lite0/1/2
# (published top-1 75.1, 76.7 and 77.6%). Their LEE on the photo set (each at its own
# resolution and preprocessing) is in the table; three models of one family cannot
# reproduce a trend across architectures, but they are real ImageNet models measured by
# the same sweep.

# %% tags=["hide-input"]
photo_path = None
if photo_set and model_set != "paper":
    photo_raw, _, photo_path = load(photo_set)
    photo = per_model(photo_raw)
    cols = ["lee_translate", "lee_rotate", "lee_shear", "lee_scale", "lee_saturate"]
    t = photo[["model", "accuracy", *cols, "eq_t", "eq_r"]].rename(
        columns={c: c.removeprefix("lee_") for c in cols} | {"accuracy": "top-1 (published)"})
    display(t.style.format(precision=4).format({"top-1 (published)": "{:.3f}"}).hide(axis="index"))
    glue("lite_translate_min", float(photo["lee_translate"].min()), display=False)
    glue("lite_translate_max", float(photo["lee_translate"].max()), display=False)

# %% [markdown]
# ## Reproducing this chapter
#
# The tables were made by the sweep command, one papermill run of
# `chapters/workers/measure_model.py` per model, then merged; the provenance box below gives each
# file's command. On a machine with timm's ImageNet weights and an ImageNet folder, the
# paper's experiment is
# `python -m lielib.book.sweep chapters/workers/measure_model.py --models paper -p imagenet FOLDER
# --out results/architectures/paper --shard i/n` (one shard per Slurm array task), then
# `python -m lielib.book.sweep merge results/architectures/paper --models paper`, and this
# chapter with `model_set = "paper"`.

# %% tags=["hide-input"]
paths = [p for p in (main_path, init_path, photo_path) if p is not None]
if model_set == "zoo":
    paths.append(ROOT / "results" / "zoo" / "accuracy.csv")
display(Markdown(provenance_markdown(paths, root=ROOT)))
