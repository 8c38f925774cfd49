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
# # Claims
#
# Which of the paper's claims hold? One row per claim of {cite:t}`gruver2023lie`: the
# paper's statement with its figure or section, what this book measured (with the number
# of images or models, $n$, and a 95% bootstrap interval), a verdict, and the chapter
# that holds the evidence. Every number is computed when the page is built, from the
# tables under `results/`, by the same functions (`lielib.book.claims`) that the chapters
# use; a test fails when a row and its chapter disagree.
#
# The verdicts are *reproduced*, *partly*, *not reproduced*, *reversed* (the data point
# the other way), *not testable offline*, and *not yet measured* (the tables are still
# being produced). Each row says the rule it applies to its interval. The book's models
# are stand-ins: a Fashion-MNIST zoo at 32 px, and the three ImageNet models whose
# weights install offline; a verdict here is about those models, not about the paper's
# ImageNet sweep.

# %% tags=["parameters"]
results_dir = "results"  # the book's results folder, relative to the repository
recompute = False  # this page only reads; each chapter's own `recompute` regenerates its tables

# %% tags=["hide-input"]
from IPython.display import Markdown, display
from myst_nb import glue

from lielib.book.claims import all_claims
from lielib.book.claims.real_models import real_models_tables
from lielib.book.paths import NotAvailableError, repo_root
from lielib.book.report import claims_markdown, provenance_box, sig, verdict_tally

if recompute:
    raise ValueError("the Claims page computes no tables: set recompute=True on the chapter "
                     "whose tables should be regenerated")
ROOT = repo_root()
RESULTS = (ROOT / results_dir).resolve()
rows = all_claims(RESULTS)
for row in rows:
    key = row.key.replace("-", "_")
    glue(f"claim_{key}_verdict", row.verdict, display=False)
    if row.value is not None:
        glue(f"claim_{key}", float(row.value), display=False)
glue("n_claims", len(rows), display=False)
glue("verdict_tally", verdict_tally(rows), display=False)
try:  # the out-of-distribution row reads translation; intensity scaling, for the note below
    _, gap, _ = real_models_tables(RESULTS)
    sat = gap[(gap.action == "saturate") & (gap.metric == "lee")]
    saturate_note = (
        "The out-of-distribution row judges translation, the transformation the paper's claim "
        "is about. Intensity scaling (*saturate*) goes the paper's way: over all the photos "
        "(the chapter's table), raw LEE out of distribution is "
        f"{sig(sat.ratio.min(), 2)} to {sig(sat.ratio.max(), 2)} "
        f"times that on the photos, the interval above 1 for {int((sat.ratio_lo > 1).sum())} of "
        f"{len(sat)} model and set pairs ({{doc}}`real_models`, the out-of-distribution gap).")
except NotAvailableError as err:
    saturate_note = f"The real-models tables are not there yet: {err}"
glue("saturate_note", Markdown(saturate_note), display=False)

# %% [markdown]
# ## The table
#
# {glue:text}`n_claims` claims; verdicts: {glue:text}`verdict_tally`. Each row gives the
# headline number with its 95% interval and $n$; the evidence link lands on the chapter's
# section, and what each row measured in full, with the rule of its verdict, follows the
# table.

# %% tags=["remove-input"]
display(Markdown(claims_markdown(rows, chapters=ROOT / "chapters")))

# %% [markdown]
# {glue:md}`saturate_note`

# %% [markdown]
# ## How to read a verdict
#
# - Each row writes its rule once (for instance: the slope's 95% interval below 0 is
#   *reproduced*, above 0 *reversed*, across 0 *not reproduced*) and applies it to the
#   interval it shows; where a row judges several metrics, transformations or seeds by
#   that rule, all alike give that verdict, some reproduced and none reversed give
#   *partly*, anything else *not reproduced*.
# - The unit of evidence is what varies independently. The zoo's models are ten
#   architectures in five variants that share a recipe, so every interval across zoo
#   models resamples the architectures (and, where extra training seeds exist, the seeds
#   within each); a row says how many architectures and seeds it rests on. Intervals over
#   images are used only where two models, or two snapshots of one, are compared on the
#   same images.
# - Softmax LEE grows with a model's confidence, so rows that compare models of different
#   confidence show the scale-free sensitivity ratio beside raw LEE and judge both.
# - A row marked *not yet measured* is waiting for a table that is being produced (more
#   training seeds, the equal-passes runs, the upright rotated-MNIST control); it turns
#   into a verdict when the table is committed, without editing this page. *Not testable
#   offline* says what this machine cannot supply.
# - The models are stand-ins: the Fashion-MNIST zoo at 32 px, a small rotated-MNIST run,
#   and the out-of-distribution and size rows from {doc}`real_models`, the only real
#   ImageNet models this book can load offline.
#
# ## The ten actions
#
# lielib implements the ten one-parameter actions of the paper's code (translations,
# rotation, scaling, shears, stretches, hyperbolic rotation, and the intensity scaling the
# paper calls *saturate*) with two departures a reader should know. The paper's stretch is
# singular: its finite transformation at $t = 0$ is not the identity; lielib's stretches are
# generated by a matrix like every other action, $T_t = e^{tG}$, so $T_0$ is the identity.
# And scaling and the hyperbolic rotation appear only in the paper's layer-wise analysis
# (Figure 4c), not in its end-to-end comparisons across models.

# %% tags=["remove-input"]
files = sorted({f for row in rows for f in row.files})
display(Markdown(provenance_box([ROOT / f for f in files], root=ROOT)))
