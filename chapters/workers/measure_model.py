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
# # Measuring one model
#
# **Claim.** Every number in the architecture comparison comes from this page, run once per
# model: the local equivariance error (LEE) of one network for each transformation, beside
# the sample-based metrics it is compared with, on a fixed seeded set of images. The sweep
# command `python -m lielib.book.sweep chapters/workers/measure_model.py --models SET` runs it through
# papermill for every model of a set and writes one table per model; it also runs on its
# own, for the model named in its parameters.
#
# For each image $x$ and transformation with generator $G$ the page computes
# $\mathrm{LEE}_G(x) = \frac{1}{K}\sum_c |L_G\, p_c(x)|$ of the softmax output $p$ by one
# forward-mode pass, and, on the same images, shift consistency, EQ-T, EQ-T$_\mathrm{frac}$
# and EQ-R (in dB, higher is more equivariant) and finite-difference invariance rates.

# %% tags=["parameters"]
model = "resnet18"  # a model of the set below
source = "zoo"  # model set: zoo, zoo-init, lite or paper
n_images = 64  # seeded images per model
actions = ["translate_x", "translate_y", "rotate", "shear_x", "shear_y", "scale", "saturate"]
metrics = True  # also compute the sample-based metrics
imagenet = ""  # ImageNet validation folder (the paper set only)
data_root = ""  # data root; empty: $LIELIB_DATA or ../shared/data
seed = 0
device = "cpu"
threads = 1  # torch CPU threads
out = ""  # results table; empty: the cache (the sweep passes results/architectures/...)
command = ""  # set by the sweep: the command recorded in the table's metadata

# %% tags=["hide-input"]
import time
from pathlib import Path

import torch
from IPython.display import Markdown, display
from myst_nb import glue

from lielib.book.modelsets import default_out, load_subject, measure
from lielib.book.results import metadata, provenance_markdown, repo_root, write_table

ROOT = repo_root()
torch.set_num_threads(threads)
torch.manual_seed(seed)
target = Path(out) if out else default_out(source, model)
if not command:
    command = (
        f"jupytext --to ipynb -o - chapters/workers/measure_model.py | papermill - out.ipynb "
        f"-p model {model} -p source {source} -p n_images {n_images}"
    )

# %%
start = time.perf_counter()
subject = load_subject(source, model, n_images=n_images, seed=seed,
                       imagenet=imagenet or None, data_root=data_root or None)
table = measure(subject, model=model, set_name=source, actions=actions, metrics=metrics,
                seed=seed, device=device)
seconds = time.perf_counter() - start
info = {k: v for k, v in subject.info.items() if k != "image_ids"}
meta = metadata(command=command, seed=seed, device=device, model=model, set=source,
                models=[model], parameters={"n_images": n_images, "actions": list(actions),
                "metrics": metrics, "imagenet": imagenet}, image_ids=subject.info["image_ids"],
                seconds=round(seconds, 1), **info)
write_table(target, table, meta)

# %% [markdown]
# ## The model's numbers
#
# Mean over the images of each column (LEE per transformation first; the decibel metrics
# are medians, since a perfectly invariant image has infinite PSNR).

# %% tags=["hide-input"]
lee_cols = [c for c in table if c.startswith("lee_")]
summary = table[lee_cols].mean().rename(lambda c: c.removeprefix("lee_")).to_frame("mean LEE")
display(summary.style.format("{:.4g}"))
if metrics:
    display(table[["consistency", "eq_t", "eq_t_frac", "eq_r", "fd_translate_x", "fd_rotate"]]
            .median().to_frame("median").style.format("{:.4g}"))
glue("measured_model", model, display=False)
glue("measured_seconds", seconds, display=False)
glue("measured_n", len(table), display=False)
glue("measured_params_m", subject.info["params"] / 1e6, display=False)

# %% [markdown]
# {glue:text}`measured_model` ({glue:text}`measured_params_m:.2f` M parameters) was measured
# on {glue:text}`measured_n` images in {glue:text}`measured_seconds:.1f` s.

# %% tags=["hide-input"]
display(Markdown(provenance_markdown([target], root=ROOT)))
