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
# # Measuring a shard of models
#
# **Claim.** Every number in the architecture comparison comes from this page, run once per
# shard of a model set: the local equivariance error (LEE) of each network for each
# transformation, beside the sample-based metrics it is compared with, on a fixed seeded
# set of images. The sweep command
# `python -m lielib.book.sweep chapters/workers/measure_model.py --models SET` runs it
# through papermill with the list of a shard's models, so one kernel measures them all,
# and each model gets its own table; it also runs on its own, for the models named in its
# parameters.
#
# For each image $x$ and transformation with generator $G$ the page computes
# $\mathrm{LEE}_G(x) = \frac{1}{K}\sum_c |L_G\, p_c(x)|$ of the softmax output $p$ by one
# forward-mode pass, and, on the same images, shift consistency, EQ-T, EQ-T$_\mathrm{frac}$
# and EQ-R (in dB, higher is more equivariant) and finite-difference invariance rates.

# %% tags=["parameters"]
models = ["resnet-small"]  # models of the set below, measured one after another
source = "zoo-init"  # model set: zoo, zoo-init, lite, paper or paper-all
n_images = 64  # seeded images per model
actions = ["translate_x", "translate_y", "rotate", "shear_x", "shear_y", "scale", "saturate"]
metrics = True  # also compute the sample-based metrics
imagenet = ""  # ImageNet validation folder (the paper set only); the sweep makes it absolute
data_root = ""  # data root; empty: $LIELIB_DATA or ../shared/data; the sweep makes it absolute
seed = 0
device = "cpu"
threads = 1  # torch CPU threads
out = ""  # results folder (one table per model); empty: the cache
command = ""  # set by the sweep: the command recorded in the tables' metadata

# %% tags=["hide-input"]
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Markdown, display

from lielib.book.modelsets import default_out
from lielib.book.results import provenance_markdown, read_table, repo_root
from lielib.book.sweep import measure_models, result_path

ROOT = repo_root()
torch.set_num_threads(threads)
folder = Path(out) if out else default_out(source, models[0]).parent
if not command:
    command = (
        "jupytext --to ipynb -o - chapters/workers/measure_model.py | papermill - out.ipynb "
        f"-p models '{list(models)!r}' -p source {source} -p n_images {n_images}"
    )

# %%
status = measure_models(models, set_name=source, out=folder, n_images=n_images, actions=actions,
                        metrics=metrics, imagenet=imagenet, data_root=data_root, seed=seed,
                        device=device, command=command)

# %% [markdown]
# ## The models' numbers
#
# Mean over the images of each LEE column, one row per model measured here, with the
# seconds spent loading the model and measuring it.

# %% tags=["hide-input"]
rows = []
for name in status["done"]:
    table, meta = read_table(result_path(folder, name))
    lee_cols = [c for c in table if c.startswith("lee_")]
    rows.append({"model": name, **table[lee_cols].mean().rename(lambda c: c.removeprefix("lee_")),
                 "load s": meta["load_seconds"], "measure s": meta["measure_seconds"]})
if rows:
    display(pd.DataFrame(rows).set_index("model").style.format("{:.4g}"))
if status["failed"]:
    display(Markdown(f"Failed (see `{folder}/failures/`): {', '.join(status['failed'])}"))

# %% tags=["hide-input"]
display(Markdown(provenance_markdown([result_path(folder, m) for m in status["done"]], root=ROOT)))
