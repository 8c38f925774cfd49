"""The paper's claims, one row each, with what this book measured and a verdict.

Every row is a function of the committed tables under ``results/``, registered with
:func:`claim` in the module of the chapter that holds its evidence
(``lielib.book.claims.<chapter>``). The Claims page and the chapters call the same
functions, so no number is typed twice. A chapter's owner adds or updates a row by
writing one function in that module::

    @claim("fig4b", source="Figure 4b", paper="...", chapter="aliasing",
           section="(b) Vision transformers and Mixers")
    def _fig4b(results: Path, base: Claim) -> Claim:
        return replace(base, value=..., lo=..., hi=..., n=..., verdict=..., measured=...,
                       glued=(("tok_embed_share", ...),))

and adding its key to :data:`ORDER`. ``glued`` lists the numbers the chapter glues that
the row also computes; the tests compare the two. A row whose tables are missing
(:class:`~lielib.book.paths.NotAvailableError`) reads "not yet measured".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..paths import ROOT, NotAvailableError
from ..results import read_table

__all__ = [
    "CLAIMS",
    "ORDER",
    "VERDICTS",
    "Claim",
    "all_claims",
    "bootstrap_indices",
    "claim",
    "claims_frame",
    "combine_verdicts",
    "fmt",
    "fmt_ci",
    "get_claim",
    "markdown_table",
    "read_results",
    "rel_paths",
    "share_by_image",
    "verdict_from_interval",
]

VERDICTS = ("reproduced", "partly", "not reproduced", "reversed", "not testable offline",
            "not yet measured")
ORDER = ("fig1-right", "fig1-right-seeds", "within-family", "family", "fig1-right-companions",
         "confound", "transformers", "training", "fig1-centre", "fig4a", "fig4b", "fig4c",
         "fig4d", "twin", "metrics", "rotated-mnist", "ood", "size", "small-large",
         "data-trend", "data-passes", "shift")
"""The rows in page order: the order of the claims in the paper's argument."""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and what the book measured.

    Attributes:
        key: short id (``"fig4a"``); the page glues ``claim_<key>``.
        source: the paper's figure or section.
        paper: the paper's statement.
        chapter: the chapter (a document name beside this page) holding the evidence.
        section: the section of that chapter.
        measured: what was measured, in words, with ``n`` and the 95% interval.
        value, lo, hi, n: the headline number, its interval and sample size (None if none).
        verdict: one of :data:`VERDICTS`.
        glued: ``(name, number)`` pairs: numbers the chapter glues under ``name``, as this
            row computes them from the same tables (the tests compare them with the
            chapter's).
        files: the results files the row read, relative to the repository.
    """

    key: str
    source: str
    paper: str
    chapter: str
    section: str
    measured: str
    value: float | None = None
    lo: float | None = None
    hi: float | None = None
    n: int | None = None
    verdict: str = "not yet measured"
    glued: tuple[tuple[str, float], ...] = ()
    files: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


CLAIMS: dict[str, tuple[dict, Callable[[Path, Claim], Claim]]] = {}
"""key -> (the row's fixed fields, the function that measures it)."""


def claim(key: str, *, source: str, paper: str, chapter: str, section: str) -> Callable:
    """Register row ``key``: the decorated ``f(results, base) -> Claim`` fills in ``base``."""
    def register(fn: Callable[[Path, Claim], Claim]) -> Callable[[Path, Claim], Claim]:
        CLAIMS[key] = ({"key": key, "source": source, "paper": paper, "chapter": chapter,
                        "section": section}, fn)
        return fn
    return register


def get_claim(key: str, results: str | Path | None = None) -> Claim:
    """Row ``key`` from the tables under ``results`` (default ``<repo>/results``).

    A missing table (any :class:`~lielib.book.paths.NotAvailableError`) gives the row with
    verdict ``"not yet measured"`` and the reason.
    """
    results = Path(results) if results is not None else ROOT / "results"
    fixed, fn = CLAIMS[key]
    base = Claim(measured="", **fixed)
    try:
        return fn(results, base)
    except NotAvailableError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return replace(base, verdict="not yet measured", measured=f"Not yet measured: {reason}.")


def all_claims(results: str | Path | None = None) -> list[Claim]:
    """Every row, in :data:`ORDER`."""
    return [get_claim(k, results) for k in ORDER]


def claims_frame(results: str | Path | None = None) -> pd.DataFrame:
    """All rows as a frame, one column per :class:`Claim` field."""
    return pd.DataFrame([asdict(c) for c in all_claims(results)])


def markdown_table(rows: list[Claim]) -> str:
    """The rows as a MyST Markdown table with ``{doc}`` links to the chapters."""
    lines = ["| claim (paper) | measured here (n, 95% interval) | verdict | evidence |",
             "|---|---|---|---|"]
    for c in rows:
        cells = [f"{c.paper} ({c.source})", c.measured, f"**{c.verdict}**",
                 f"{{doc}}`{c.chapter}`, {c.section}"]
        lines.append("| " + " | ".join(s.replace("|", "/").replace("\n", " ") for s in cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ shared helpers


def read_results(results: Path, rel: str) -> pd.DataFrame:
    """The table ``results/<rel>`` (MissingResultsError when absent)."""
    return read_table(results / rel)[0]


def rel_paths(results: Path, *rels: str) -> tuple[str, ...]:
    """``results/<rel>`` relative to the repository, for the provenance box."""
    try:
        return tuple(str((results / r).resolve().relative_to(ROOT)) for r in rels)
    except ValueError:
        return rels


def fmt(x: float, digits: int = 2) -> str:
    """A number for a sentence: ``digits`` decimals, or ``digits`` significant digits when
    the number is below 0.01 or above 10^4 in size."""
    return f"{x:.{digits}g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{digits}f}"


def fmt_ci(est: float, lo: float, hi: float, digits: int = 2) -> str:
    """``est [lo, hi]``."""
    return f"{fmt(est, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def verdict_from_interval(lo: float, hi: float, expected_sign: int, *, null: float = 0.0) -> str:
    """The verdict an interval gives a claim that predicts ``expected_sign`` (+1 or -1).

    The whole interval on the predicted side of ``null`` (0 for a slope or a difference, 1
    for a ratio): reproduced; the whole interval on the other side: reversed; an interval
    that holds ``null``: not reproduced.
    """
    if expected_sign not in (-1, 1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign!r}")
    above, below = lo > null, hi < null
    if (below if expected_sign < 0 else above):
        return "reproduced"
    if (above if expected_sign < 0 else below):
        return "reversed"
    return "not reproduced"


def combine_verdicts(verdicts: list[str] | tuple[str, ...]) -> str:
    """One verdict from several (metrics, actions, seeds) judged by the same rule.

    All alike: that verdict. Some reproduced and none reversed: partly. Anything else
    (some reversed beside others not, or reproduced beside reversed): not reproduced.
    """
    kinds = set(verdicts)
    if not kinds:
        raise ValueError("no verdicts to combine")
    if len(kinds) == 1:
        return kinds.pop()
    if "reproduced" in kinds and "reversed" not in kinds:
        return "partly"
    return "not reproduced"


def share_by_image(frame: pd.DataFrame, mask: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the summed value of the masked modules, and of all modules."""
    part = frame.assign(sel=np.where(mask, frame["value"], 0.0)).groupby("image")
    return part["sel"].sum().to_numpy(), part["value"].sum().to_numpy()


def bootstrap_indices(stat: Callable[[np.ndarray], float], n: int,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of ``stat(indices)`` over resampled indices (scipy)."""
    from scipy.stats import bootstrap

    res = bootstrap((np.arange(n),), lambda i: stat(i.astype(int)), vectorized=False,
                    n_resamples=2000, method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# The chapters' rows register themselves on import (after the machinery above).
from . import aliasing, architectures, real_models, rotated_mnist  # noqa: F401
