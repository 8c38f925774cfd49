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
# # Learning rotation equivariance from data: a masked-autoencoder ViT on rotated MNIST
#
# **Claim.** A vision transformer has no built-in rotation symmetry, yet it can learn one
# from data. If it does, the Lie derivative of its predictions along rotations should fall
# as it is trained on digits shown at every angle, while the Lie derivative along
# translations, a symmetry the data do not teach, has no reason to. The paper tests this by
# fine-tuning a ViT pretrained as a masked autoencoder (MAE) {cite:p}`he2022mae` on rotated
# MNIST for 100 epochs {cite:p}`gruver2023lie`. This chapter repeats the experiment end to
# end with code in `lielib`, tracks accuracy and both Lie derivatives after every epoch,
# compares with the same ViT trained from scratch and with a small CNN, and asks where in
# the network the rotation error sits before and after training.
#
# **The data are a rebuild.** Rotated MNIST here is *not* the original
# `mnist_rotation_new` files of {cite:t}`larochelle2007empirical` (no package ships them):
# `lielib.book.rotated_mnist.data` rebuilds the benchmark the same way, 12,000 training and 50,000
# test digits drawn from MNIST {cite:p}`lecun1998gradient`, each rotated by an angle drawn
# uniformly from $[0, 2\pi)$, with a fixed seed. A seeded permutation of all 70,000 MNIST
# digits is cut into the training digits, the test digits and 8,000 *held-out* digits. The
# MAE is pretrained on the held-out digits, upright, so that no pretraining digit is in the
# rotated test set (or the training set).
#
# **What is measured.** For a classifier with class probabilities $p(x)$, the local
# equivariance error along a one-parameter group $T_t$ is
# $\mathrm{LEE}(x) = \frac{1}{K}\sum_{c} |\tfrac{d}{dt} p_c(T_t x)|_{t=0}|$ (the paper's
# code), computed by `lielib.lee` with forward-mode automatic differentiation. Rotations
# are measured in radians about the image centre; translations in the library's normalised
# units ($t = 1$ moves by half the image width), averaged over the horizontal and vertical
# directions. Both are averaged over a fixed seeded subset of the rotated test digits.

# %% tags=["parameters"]
recompute = False  # True: rerun the experiment and overwrite the tables (CPU: ~10 min)
results_dir = "results/rotated_mnist"  # the experiment's tables, relative to the repository
cache_dir = None  # model weights; None: <repo>/cache/rotated_mnist (not in git)
preset = "cpu"  # "cpu": the defaults below; "paper": lielib.book.rotated_mnist.mae.PAPER_SCALE on a GPU
threads = 1  # torch CPU threads when recomputing
# Overrides of the preset (None keeps the preset's value). The CPU preset fine-tunes for
# 8 epochs on 6,000 training digits and measures accuracy on 2,000 test digits; the paper's
# scale (preset="paper") is 100 epochs on all 12,000 / 50,000 digits with a larger ViT.
seed = None
variants = None  # e.g. ["mae", "scratch", "cnn", "mae+rot"] ("+rot": rotation augmentation)
train_size = None
eval_size = None
lee_size = None
layerwise_size = None
pretrain_size = None
mae_epochs = None
epochs = None
embed_dim = None
depth = None
num_heads = None
decoder_dim = None
decoder_depth = None
mlp_ratio = None
patch_size = None
mask_ratio = None
cnn_width = None
batch_size = None
lr = None
mae_lr = None
device = None

# %% tags=["hide-input"]
from dataclasses import asdict, fields

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

from lielib.book.paths import repo_root
from lielib.book.plotting import OKABE_ITO, use_theme
from lielib.book.results import provenance_markdown, read_or_compute, read_table
from lielib.book.rotated_mnist.data import load_pretraining_digits, load_rotated_mnist
from lielib.book.rotated_mnist.mae import PAPER_SCALE, ExperimentConfig, mae_loss, run_experiment

ROOT = repo_root()
RESULTS = ROOT / results_dir
EPOCHS_CSV = RESULTS / "epochs.csv"
MAE_CSV = RESULTS / "mae_pretraining.csv"
LAYERWISE_CSV = RESULTS / "layerwise.csv"
use_theme()

if preset not in ("cpu", "paper"):
    raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
overrides = dict(PAPER_SCALE) if preset == "paper" else {}
for f in fields(ExperimentConfig):
    value = globals().get(f.name)
    if value is not None:
        overrides[f.name] = tuple(value) if f.name == "variants" else value
config = ExperimentConfig(**overrides)


def other_config(meta: dict) -> str | None:
    """Why stored results answer another question (other parameters), if they do."""
    wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    stored = meta.get("config") or {}
    differ = sorted(k for k in wanted if stored.get(k) != wanted[k])
    return f"made with other parameters ({', '.join(differ)})" if differ else None


def compute() -> None:
    torch.set_num_threads(threads)
    run_experiment(config, RESULTS, cache_dir=cache_dir)


HOW = "python -m lielib.book.rotated_mnist.mae"
epochs_table, meta = read_or_compute(EPOCHS_CSV, compute, recompute=recompute, how=HOW,
                                     stale=other_config)
print(("Recomputed" if recompute else "Read") + f" the results in {RESULTS}.")
mae_curve = read_table(MAE_CSV, how=HOW)[0] if MAE_CSV.exists() else None
VARIANTS = list(dict.fromkeys(epochs_table["variant"]))
LABELS = {
    "mae": "ViT, MAE-pretrained",
    "scratch": "ViT from scratch",
    "cnn": "small CNN",
}
COLORS = {"mae": OKABE_ITO["vermillion"], "scratch": OKABE_ITO["orange"], "cnn": OKABE_ITO["blue"]}


def label(variant: str) -> str:
    base, _, suffix = variant.partition("+")
    return LABELS.get(base, base) + (" + rotation augmentation" if suffix == "rot" else "")


def color(variant: str) -> str:
    return COLORS.get(variant.partition("+")[0], OKABE_ITO["grey"])


cfg = meta.get("config", {})
glue("train_size", f"{cfg.get('train_size', 0):,}", display=False)
glue("eval_size", f"{cfg.get('eval_size', 0):,}", display=False)
glue("lee_size", int(cfg.get("lee_size", 0)), display=False)
glue("n_epochs", int(meta.get("epochs", 0)), display=False)
glue("mae_epochs", int(meta.get("mae_epochs", 0)), display=False)
glue("pretrain_size", f"{cfg.get('pretrain_size', 0):,}", display=False)
glue("vit_shape", f"{cfg.get('embed_dim')}-dimensional, {cfg.get('depth')} blocks", display=False)
glue("run_minutes", meta.get("seconds", {}).get("total", float("nan")) / 60, display=False)
glue("run_cpu_minutes", meta.get("seconds", {}).get("total_cpu", float("nan")) / 60, display=False)
glue("run_threads", int(meta.get("threads", 0)), display=False)
glue("run_device", meta.get("device", "unknown"), display=False)

# %% [markdown]
# ## The MAE pretraining
#
# The encoder is a timm `VisionTransformer` {cite:p}`dosovitskiy2021image,wightman2019timm`
# ({glue:text}`vit_shape`, patches of 4 x 4 pixels, so a 7 x 7 grid of tokens and one
# class token; average pooling over the patch tokens feeds the classification head). For
# pretraining, 75% of the patches of each digit are hidden, the encoder sees the rest, and a
# one-block decoder reconstructs the hidden patches; the loss is the squared error on each
# hidden patch's pixels normalised to zero mean and unit variance, as in the MAE paper.
# It ran for {glue:text}`mae_epochs` epochs on the {glue:text}`pretrain_size` held-out
# upright digits.

# %% tags=["hide-input"]
# Reference: the loss of predicting zero (the mean of every normalised patch) everywhere.
digits, _ = load_pretraining_digits(seed=config.seed, size=cfg.get("pretrain_size", 8000))
patch = cfg.get("patch_size", 4)
ones = torch.ones(len(digits), (28 // patch) ** 2)
zero_loss = float(mae_loss(torch.zeros(*ones.shape, patch * patch), digits, ones, patch))
glue("mae_loss_zero", zero_loss, display=False)
if mae_curve is not None:
    glue("mae_loss_first", float(mae_curve["loss"].iloc[0]), display=False)
    glue("mae_loss_last", float(mae_curve["loss"].iloc[-1]), display=False)
    display(mae_curve.round(4).set_index("epoch"))
else:
    glue("mae_loss_first", float("nan"), display=False)
    glue("mae_loss_last", float("nan"), display=False)
    print("No MAE variant in these results: nothing was pretrained.")

# %% [markdown]
# The mean reconstruction loss fell from {glue:text}`mae_loss_first:.3f` in the first epoch
# to {glue:text}`mae_loss_last:.3f` in the last. For scale: predicting zero for every hidden
# patch (its mean, after normalisation) scores {glue:text}`mae_loss_zero:.3f` on these
# digits, low because most 4 x 4 patches of an MNIST digit are blank and cost nothing either
# way; the gap to that reference is what the encoder learned about strokes. A few examples of the rotated digits the
# models are then fine-tuned on:

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Rotated MNIST as rebuilt by lielib: the first test digits, each turned counter-clockwise by its own uniformly drawn angle (shown above each digit, in degrees).", "name": "fig-rotated-mnist-examples"}, "image": {"alt": "A row of ten handwritten digits from MNIST, each rotated by a different angle, with the angle in degrees above each."}}
examples = load_rotated_mnist("test", seed=config.seed, size=10)
fig, axes = plt.subplots(1, 10, figsize=(11, 1.6))
for ax, img, angle, y in zip(axes, examples.images, examples.angles, examples.labels):
    ax.imshow(img[0], cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(f"{int(y)}: {np.degrees(float(angle)):.0f}°", fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Accuracy and Lie derivatives through fine-tuning
#
# Each variant is trained on {glue:text}`train_size` rotated training digits for
# {glue:text}`n_epochs` epochs (AdamW, one epoch of warm-up, cosine decay). Epoch 0 is the
# model before fine-tuning: for the MAE variant, the pretrained encoder with a fresh
# classification head. After every epoch the accuracy is measured on the first
# {glue:text}`eval_size` rotated test digits and both Lie derivatives on the first
# {glue:text}`lee_size`.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Accuracy on the rotated test digits (left), and the local equivariance error of the softmax output along rotations (middle) and translations (right), after each epoch of training, for each model. Epoch 0 is before fine-tuning. The Lie derivatives are on a log scale.", "name": "fig-rotated-mnist-epochs"}, "image": {"alt": "Three line charts against training epoch: test accuracy rising for each model, and the rotation and translation local equivariance errors of each model on a logarithmic axis."}}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
panels = [
    ("accuracy", "test accuracy", False),
    ("lee_rotate", "rotation LEE (per radian)", True),
    ("lee_translate", "translation LEE (per half-width)", True),
]
for ax, (column, title, log) in zip(axes, panels):
    for variant in VARIANTS:
        rows = epochs_table[epochs_table["variant"] == variant]
        dashed = "+rot" in variant
        ax.plot(rows["epoch"], rows[column], marker="o", ms=4, color=color(variant),
                ls="--" if dashed else "-", label=label(variant))
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=11)
    if log:
        ax.set_yscale("log")
axes[0].legend(loc="lower right", fontsize=9)
fig.tight_layout()
plt.show()

# %% tags=["hide-input"]
summary_rows = []
for variant in VARIANTS:
    rows = epochs_table[epochs_table["variant"] == variant].set_index("epoch")
    first, last = rows.loc[1] if 1 in rows.index else rows.iloc[0], rows.iloc[-1]
    start = rows.loc[0] if 0 in rows.index else rows.iloc[0]
    summary_rows.append(
        {
            "model": label(variant),
            "key": variant,
            "accuracy": last["accuracy"],
            "rotation LEE, epoch 0": start["lee_rotate"],
            "rotation LEE, epoch 1": first["lee_rotate"],
            "rotation LEE, last": last["lee_rotate"],
            "translation LEE, epoch 1": first["lee_translate"],
            "translation LEE, last": last["lee_translate"],
            "rotation / translation, epoch 1": first["lee_rotate"] / first["lee_translate"],
            "rotation / translation, last": last["lee_rotate"] / last["lee_translate"],
        }
    )
summary = pd.DataFrame(summary_rows).set_index("key")
for variant in sorted({"mae", "scratch", "cnn"} - set(summary.index)):  # quoted, not run
    for name in ("acc", "lee_rot0", "lee_rot1", "lee_rot_last", "ratio_first", "ratio_last"):
        glue(f"{name}_{variant}", float("nan"), display=False)
    for name in ("rot_change", "tr_change"):
        glue(f"{name}_{variant}", "(not run)", display=False)
for variant, row in summary.iterrows():
    key = variant.replace("+", "_")
    glue(f"acc_{key}", float(row["accuracy"]), display=False)
    glue(f"lee_rot0_{key}", float(row["rotation LEE, epoch 0"]), display=False)
    glue(f"lee_rot1_{key}", float(row["rotation LEE, epoch 1"]), display=False)
    glue(f"lee_rot_last_{key}", float(row["rotation LEE, last"]), display=False)
    change_rot = row["rotation LEE, last"] / row["rotation LEE, epoch 1"] - 1
    change_tr = row["translation LEE, last"] / row["translation LEE, epoch 1"] - 1
    glue(f"rot_change_{key}", f"{'fell' if change_rot < 0 else 'rose'} by {abs(change_rot):.0%}",
         display=False)
    glue(f"tr_change_{key}", f"{'fell' if change_tr < 0 else 'rose'} by {abs(change_tr):.0%}",
         display=False)
    glue(f"ratio_first_{key}", float(row["rotation / translation, epoch 1"]), display=False)
    glue(f"ratio_last_{key}", float(row["rotation / translation, last"]), display=False)

fell = [label(v) for v in summary.index
        if summary.loc[v, "rotation LEE, last"] < summary.loc[v, "rotation LEE, epoch 1"]]
glue("rot_fell_models", ", ".join(fell) if fell else "none", display=False)
glue("rot_fell_count", f"{len(fell)} of {len(summary)}", display=False)
summary.drop(columns="model").rename(index=label).style.format(
    {"accuracy": "{:.1%}", **{c: "{:.2e}" for c in summary.columns if "LEE" in c},
     **{c: "{:.2f}" for c in summary.columns if "/" in c}}
)

# %% [markdown]
# After {glue:text}`n_epochs` epochs the MAE-pretrained ViT classifies
# {glue:text}`acc_mae:.1%` of the rotated test digits correctly, the same ViT trained from
# scratch {glue:text}`acc_scratch:.1%`, and the small CNN {glue:text}`acc_cnn:.1%`.
#
# **Does the rotation Lie derivative fall as the symmetry is learned?** Before fine-tuning,
# a randomly initialised model's outputs are nearly uniform over the classes, so its Lie
# derivatives start small (the ViT from scratch: a rotation LEE of
# {glue:text}`lee_rot0_scratch:.2e` at epoch 0; the MAE-pretrained ViT, whose fresh head
# sits on trained features, {glue:text}`lee_rot0_mae:.2e`), and they grow as the models
# become confident. The question is what happens from then on. From the first epoch to the
# last, the rotation LEE of the MAE-pretrained ViT {glue:text}`rot_change_mae` (from
# {glue:text}`lee_rot1_mae:.2e` to {glue:text}`lee_rot_last_mae:.2e`) and its translation
# LEE {glue:text}`tr_change_mae`; for the ViT from scratch the rotation LEE
# {glue:text}`rot_change_scratch` and the translation LEE {glue:text}`tr_change_scratch`;
# for the CNN the rotation LEE {glue:text}`rot_change_cnn` and the translation LEE
# {glue:text}`tr_change_cnn`. The rotation LEE fell from the first epoch to the last for
# {glue:text}`rot_fell_count` models ({glue:text}`rot_fell_models`).
#
# A model that learns rotation symmetry *specifically* should also see its rotation LEE
# shrink relative to its translation LEE. The ratio of the two went from
# {glue:text}`ratio_first_mae:.2f` after the first epoch to {glue:text}`ratio_last_mae:.2f`
# at the end for the MAE-pretrained ViT, from {glue:text}`ratio_first_scratch:.2f` to
# {glue:text}`ratio_last_scratch:.2f` for the ViT from scratch, and from
# {glue:text}`ratio_first_cnn:.2f` to {glue:text}`ratio_last_cnn:.2f` for the CNN. The two
# actions have different units (a radian against half the image width), so the ratio is
# compared between models and over epochs, not against 1.
#
# ```{note}
# With the CPU default these are short runs ({glue:text}`n_epochs` epochs on a few
# thousand digits), far from the paper's 100 epochs, and the models are still far from their
# final accuracy. Whether the rotation Lie derivative turns down once the accuracy
# saturates is what `preset="paper"` in the parameters tests, at the paper's scale on a GPU.
# ```
#
# ## Where in the network is the rotation error?
#
# The layer-wise decomposition of `lielib.decompose` splits the end-to-end Lie derivative into
# each module's own Lie derivative pushed to the output by the rest of the network
# {cite:p}`gruver2023lie`, computed exactly with forward-mode automatic differentiation. It
# is measured at the start and at the end of fine-tuning on a few rotated test digits.

# %% tags=["hide-input"]
layerwise_status = meta.get("layerwise", "not recorded")
if LAYERWISE_CSV.exists():
    layerwise, lw_meta = read_table(LAYERWISE_CSV)
else:
    layerwise = None
    display(Markdown(
        "```{warning}\n"
        f"The layer-wise decomposition is not in these results (status: {layerwise_status}). "
        "It needs `lielib.decompose` and the model weights the experiment cached; produce it "
        "with `python -m lielib.book.rotated_mnist.mae --layerwise-only` after running the experiment "
        "(`python -m lielib.book.rotated_mnist.mae`), then rebuild this page.\n```"
    ))
glue("layerwise_status", layerwise_status, display=False)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Where the rotation error sits before (light) and after (dark) fine-tuning: each module's contribution to the rotation Lie derivative of the softmax output, the squared norm of its own Lie derivative pushed to the output (mean over the measured digits, log scale), in execution order from input (left) to output (right), one panel per model; '(residual)' is what no module covers, such as adding the position embedding.", "name": "fig-rotated-mnist-layerwise"}, "image": {"alt": "Line charts, one per model, of each layer's contribution to the rotation Lie derivative before and after fine-tuning, on a logarithmic axis, with the layers in order from input to output."}}
if layerwise is not None:
    models = [v for v in VARIANTS if v in set(layerwise["variant"])]
    fig, axes = plt.subplots(
        1, len(models), figsize=(4.6 * len(models), 4.2), squeeze=False, sharey=True
    )
    for ax, variant in zip(axes[0], models):
        part = layerwise[layerwise["variant"] == variant]
        for stage, alpha in (("start", 0.35), ("end", 1.0)):
            rows = part[part["stage"] == stage].sort_values("order")
            ax.plot(np.arange(len(rows)), rows["value"].where(rows["value"] > 0), marker="o",
                    ms=4, color=color(variant), alpha=alpha, label=stage)
        ends = part[part["stage"] == "end"].sort_values("order")
        names = [m if not m.isdigit() else f"{m}: {t}" for m, t in
                 zip(ends["module"].astype(str), ends["module_type"].fillna(""))]
        ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(label(variant), fontsize=11)
    axes[0][0].set_ylabel("contribution  ||J L m||²")
    axes[0][0].legend(fontsize=9)
    fig.tight_layout()
    plt.show()
else:
    print("No layer-wise results to plot (see the warning above).")

# %% tags=["hide-input"]
if layerwise is not None:
    by_kind = (
        layerwise.groupby(["variant", "stage", "layer_kind"])["value"].sum().unstack("stage")
    )
    share = by_kind / by_kind.groupby(level=0).transform("sum")
    words = {"embed": "the patch embedding", "residual": "the operations no module covers",
             "norm": "the normalisation layers", "attention": "the attention blocks",
             "mlp": "the MLP blocks", "conv": "the convolutions", "pool": "the pooling layers",
             "activation": "the activations", "linear": "the linear layers"}

    def kind(name: str) -> str:
        return words.get(name, f"the {name} layers")

    sentences = []
    for variant in models:
        end, start = by_kind.loc[variant, "end"], by_kind.loc[variant, "start"]
        ratio = float(end.sum() / start.sum())
        sentences.append(
            f"in the {label(variant)}, {end.max() / end.sum():.0%} of the summed contributions "
            f"sits in {kind(end.idxmax())} at the end ({start.max() / start.sum():.0%} in "
            f"{kind(start.idxmax())} at the start), and the sum {'grew' if ratio >= 1 else 'shrank'} "
            f"by a factor of {max(ratio, 1 / ratio):.2g}"
        )
    lw_sentence = "; ".join(sentences) + "."
    lw_sentence = lw_sentence[0].upper() + lw_sentence[1:]
    display(share.round(3))
else:
    lw_sentence = "no layer-wise results are available for this run (see the warning above)."
glue("lw_sentence", lw_sentence, display=False)

# %% [markdown]
# The layer-wise status recorded with these results: *{glue:text}`layerwise_status`*.
# Summed by kind of layer (the table gives each kind's share at both stages):
# {glue:text}`lw_sentence`
#
# ## How this was computed
#
# Everything above comes from one command, `python -m lielib.book.rotated_mnist.mae`, which pretrains the MAE,
# fine-tunes every variant, measures it after each epoch and writes the tables read here;
# this run took {glue:text}`run_minutes:.1f` minutes of wall-clock time
# ({glue:text}`run_cpu_minutes:.1f` minutes of processor time; torch threads:
# {glue:text}`run_threads`; a shared machine) on {glue:text}`run_device`. The page
# reads those tables and reruns the experiment only when asked (`recompute=True`), when they
# are missing, or when the parameters ask for a different experiment. The rotated MNIST
# used here is lielib's seeded rebuild of the benchmark, not the original files.

# %% tags=["remove-input"]
display(Markdown(provenance_markdown([EPOCHS_CSV, MAE_CSV, LAYERWISE_CSV])))
