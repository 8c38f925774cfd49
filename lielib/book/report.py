"""How the book shows what it measured: numbers, tables, figures, verdicts and provenance.

One formatter for every number a reader sees (:func:`sig`, :func:`fmt_ci`), one table
renderer (:func:`table_html`: significant figures, intervals kept on one line, a scroll
container so that nothing is clipped on a narrow screen, long tables collapsed), figures
glued for a numbered MyST ``glue:figure`` with a caption (:func:`glue_figure`), the verdict
box that opens a chapter and the Claims table (:func:`verdict_markdown`,
:func:`claims_markdown`), and a compact provenance box (:func:`provenance_box`).

The chapters call these; the functions only format what they are given.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .paths import ROOT

__all__ = [
    "HEADLINES",
    "TABLE_CLASS",
    "chapter_rows",
    "claim_label",
    "claims_markdown",
    "fmt_ci",
    "fmt_count",
    "format_frame",
    "glue_figure",
    "headline",
    "provenance_box",
    "section_label",
    "show_table",
    "sig",
    "table_html",
    "verdict_markdown",
    "verdict_tally",
]

TABLE_CLASS = "book-table"
"""CSS class of every table the book renders (``book_css/book.css``; the browser test)."""

MISSING = "–"
NBSP = "\u00a0"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _decimals(magnitude: float, digits: int) -> int:
    """Decimals that show ``digits`` significant figures of a number of this size."""
    if magnitude == 0:
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(magnitude)))


def _scientific(magnitude: float) -> bool:
    return magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5)


def _sci(x: float, digits: int) -> str:
    mant, exp = f"{x:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def sig(x: Any, digits: int = 3) -> str:
    """``x`` with ``digits`` significant figures, as a reader reads it.

    Fixed point between 0.001 and 100,000 (``0.5 -> "0.500"``, ``1234.5 -> "1,230"``),
    ``1.23e-5`` outside; integers as integers (thousands separated); NaN and None as "–".
    """
    if x is None or isinstance(x, str):
        return MISSING if x is None else x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if not _finite(x):
        return MISSING
    x = float(x)
    mag = abs(x)
    if _scientific(mag):
        return _sci(x, digits)
    # round first, so 9.996 at 3 figures is "10.0", not "10.00"
    rounded = float(f"{x:.{digits}g}")
    return f"{rounded:,.{_decimals(abs(rounded), digits)}f}"


def fmt_ci(est: Any, lo: Any, hi: Any, *, digits: int = 3, percent: bool = False) -> str:
    """``est [lo, hi]`` with one number of decimals for all three.

    The decimals give ``digits`` significant figures to the largest of the three, so an
    interval never mixes ``-1`` with ``0.191``; ``percent=True`` multiplies by 100 and
    appends ``%`` (``"23 [18, 29]%"``). Tiny or huge values use one shared exponent.
    """
    vals = [float(v) if _finite(v) else math.nan for v in (est, lo, hi)]
    if percent:
        vals = [100 * v for v in vals]
    finite = [abs(v) for v in vals if math.isfinite(v)]
    if not finite:
        return MISSING
    mag = max(finite)
    suffix = "%" if percent else ""
    if _scientific(mag):
        exp = math.floor(math.log10(mag))
        scaled = [v / 10 ** exp for v in vals]
        d = _decimals(max(abs(v) for v in scaled if math.isfinite(v)), digits)
        body = [MISSING if not math.isfinite(v) else f"{v:.{d}f}" for v in scaled]
        return f"{body[0]} [{body[1]}, {body[2]}]e{exp}{suffix}"
    d = _decimals(float(f"{mag:.{digits}g}"), digits)
    body = [MISSING if not math.isfinite(v) else f"{v:,.{d}f}" for v in vals]
    return f"{body[0]} [{body[1]}, {body[2]}]{suffix}"


def fmt_count(n: Any) -> str:
    """An integer count with thousands separators (``60000 -> "60,000"``)."""
    return f"{int(n):,}" if _finite(n) else MISSING


Formatter = str | Callable[[Any], str]


def _cell(value: Any, fmt: Formatter | None, digits: int) -> str:
    if fmt is not None and not (isinstance(value, float) and math.isnan(value)):
        return fmt(value) if callable(fmt) else fmt.format(value)
    return sig(value, digits)


def format_frame(frame: pd.DataFrame, formats: Mapping[str, Formatter] | None = None, *,
                 digits: int = 3) -> pd.DataFrame:
    """Every cell of ``frame`` as the string a reader sees (:func:`sig` unless ``formats``
    names a format spec or a function for the column)."""
    formats = dict(formats or {})
    unknown = set(formats) - set(frame.columns)
    if unknown:
        raise KeyError(f"formats for columns the table does not have: {sorted(unknown)}")
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        out[col] = [_cell(v, formats.get(col), digits) for v in frame[col].tolist()]
    return out


_NUMERIC_CELL = re.compile(r"^[-+−]?[\d.,]+(?:e-?\d+)?%?(?: \[.*\](?:e-?\d+)?%?)?$")


def table_html(frame: pd.DataFrame, formats: Mapping[str, Formatter] | None = None, *,
               digits: int = 3, index: bool = False, collapse: int = 15,
               summary: str | None = None, caption: str | None = None) -> str:
    """``frame`` as a reader's HTML table: formatted cells, in a horizontal scroll container.

    Args:
        frame: the tidy table; its column names are the headers (units in them).
        formats: per-column format spec (``"{:.1%}"``) or function; :func:`sig` otherwise.
        digits: significant figures of unformatted numbers.
        index: show the index as the first column(s).
        collapse: tables with more rows are folded into a ``<details>`` element.
        summary: the text of the fold (default: "Show the table (N rows)").
        caption: a caption above the table.

    Numbers and intervals are right-aligned and never wrap; text cells wrap.
    """
    if index:
        frame = frame.reset_index()
    cells = format_frame(frame, formats, digits=digits)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, row in cells.iterrows():
        tds = []
        for value in row.tolist():
            cls = ' class="num"' if _NUMERIC_CELL.match(value) else ""
            tds.append(f"<td{cls}>{html.escape(value)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    table = (f'<div class="{TABLE_CLASS}-wrap"><table class="{TABLE_CLASS}">{cap}'
             f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    if len(frame) > collapse:
        text = summary or f"Show the table ({len(frame)} rows)"
        table = (f'<details class="{TABLE_CLASS}-fold"><summary>{html.escape(text)}</summary>'
                 f"{table}</details>")
    return table


def show_table(frame: pd.DataFrame, formats: Mapping[str, Formatter] | None = None,
               **kwargs) -> None:
    """Display :func:`table_html` of ``frame`` in a notebook cell."""
    from IPython.display import HTML, display

    display(HTML(table_html(frame, formats, **kwargs)))


def glue_figure(name: str, fig) -> None:
    """Glue ``fig`` under ``name`` for a ``glue:figure`` directive, and close it.

    The chapter's Markdown then numbers and captions it (the caption can quote glued
    numbers)::

        ```{glue:figure} name
        :name: fig-...
        :alt: what the figure shows, in words

        The caption.
        ```
    """
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


# ------------------------------------------------------------------ verdicts and claims

HEADLINES: dict[str, tuple[str, str]] = {
    "fig1-right": ("slope of translation LEE per unit accuracy (linear axis)", "Linear axis: slope"),
    "fig1-right-seeds": ("slope of translation LEE per unit accuracy over seeds (linear axis)",
                         "seeds"),
    "within-family": ("CNN slope of log10 translation LEE per unit accuracy", "inside each family"),
    "family": ("R² of LEE ~ accuracy minus R² of LEE ~ family (linear axis)", "R²(LEE ~ family)"),
    "fig1-right-companions": ("slope of log10 ρ per unit accuracy", "sensitivity ratio ρ"),
    "confound": ("coefficient of accuracy given the training-set size (raw LEE)",
                 "log10 training images"),
    "transformers": ("best ViT / best CNN translation LEE", "Best ViT"),
    "training": ("mean log10(trained / initial) translation LEE", "trained / initialisation"),
    "fig1-centre": ("activations' squared share in the zoo ResNet-18", "in the activations"),
    "fig4a": ("lowest CNN share of downsampling or non-linear modules", "downsampling or non-linear"),
    "fig4b": ("lowest patch-embedding share", "embedding share"),
    "fig4c": ("mean Spearman ρ of module shares between geometric actions", "mean Spearman ρ"),
    "fig4d": (("activations' share of the exact budget minus their share of the integer-shift "
               "error (points, zoo ResNet-18)"), "integer-shift error"),
    "twin": ("plain / blurred-twin translation LEE", "its twin"),
    "metrics": ("Spearman ρ of EQ-T with translation LEE", "EQ-T"),
    "rotated-mnist": ("change of log(rotation / translation LEE), last epoch minus epoch 1",
                      "last epoch minus epoch 1"),
    "ood": ("lowest out- / in-distribution ratio of translation LEE", "out / in distribution"),
    "size": ("Lite2 / Lite0 translation LEE", "Lite2 / Lite0"),
    "small-large": ("mean log10(large / small) translation LEE", "Large against small"),
    "data-trend": ("slope of log10 translation LEE per decade of training images",
                   "per decade of training images"),
    "data-passes": ("slope of log10 translation LEE per decade of images at equal passes",
                    "passes"),
    "shift": ("mean log10(shift-augmented / plain) translation LEE", "shifts of up to"),
}
"""What each Claims row's headline number is, and a phrase its ``measured`` text must
contain for the label to apply. A row not listed, or whose text no longer contains the
phrase (the row was rewritten), is labelled by the words of its ``measured`` text before
the first number instead, so a label never outlives the number it names."""

PERCENT_HEADLINES = {"fig1-centre", "fig4a", "fig4b"}
"""Rows whose headline number is a percentage (stored as 0-100)."""


def claim_label(row) -> str:
    """The words that say what ``row``'s headline number is."""
    label, phrase = HEADLINES.get(row.key, ("", None))
    if phrase is not None and phrase in row.measured:
        return label
    words = re.split(r"[-−]?\d", row.measured, maxsplit=1)[0].strip(" :;,(=")
    return words[:90] or "headline number"


def headline(row, *, digits: int = 3) -> str:
    """``row``'s headline number: ``value [lo, hi]`` (or the value alone) and ``n``."""
    if row.value is None:
        return MISSING
    if row.lo is not None and row.hi is not None:
        num = fmt_ci(row.value, row.lo, row.hi, digits=digits)
        while digits < 5 and len({t.strip(",") for t in re.findall(r"[-\d.,]+", num)}) == 1:
            digits += 1  # "1.00 [1.00, 1.00]" says nothing: show the figures that differ
            num = fmt_ci(row.value, row.lo, row.hi, digits=digits)
    else:
        num = sig(row.value, digits)
    if row.key in PERCENT_HEADLINES and not num.endswith("%"):
        num += "%"
    num = num.replace(" ", NBSP)  # an interval stays on one line wherever it is shown
    return f"{num}, n{NBSP}={NBSP}{fmt_count(row.n)}" if row.n else num


def section_label(section: str) -> str:
    """The MyST label a chapter puts above the section a Claims row points to.

    ``"(a) CNNs: activations"`` -> ``"sec-a-cnns-activations"``; the chapter writes
    ``(sec-a-cnns-activations)=`` on the line above the heading.
    """
    return "sec-" + re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-")


def _anchor(row, chapters: Path) -> str | None:
    """The section's label when the chapter's source defines it."""
    label = section_label(row.section)
    try:
        text = (chapters / f"{row.chapter}.py").read_text()
    except OSError:
        return None
    return label if re.search(rf"^# \({re.escape(label)}\)=\s*$", text, re.MULTILINE) else None


def _link(row, chapters: Path, *, prefix: str = "") -> str:
    label = _anchor(row, chapters)
    if label:
        return f"{{ref}}`{label}`"  # the link text is the section's own title
    return f"{{doc}}`{prefix}{row.chapter}`, {row.section}"


def verdict_markdown(rows: Sequence, *, chapters: str | os.PathLike | None = None,
                     title: str = "Verdict") -> str:
    """The box that opens a chapter: one line per claim with its verdict and number.

    Each line: the paper's figure, the verdict in bold, the headline number with its
    interval and ``n``, and a link to the section with the evidence.
    """
    chapters = Path(chapters) if chapters is not None else ROOT / "chapters"
    lines = [f"```{{admonition}} {title}", ":class: tip", ""]
    for r in rows:
        lines.append(f"- **{r.source}: {r.verdict}.** {claim_label(r)[:1].upper()}"
                     f"{claim_label(r)[1:]}: {headline(r)}. See {_link(r, chapters)}.")
    lines.append("```")
    return "\n".join(lines)


def chapter_rows(chapter: str, results: str | os.PathLike | None = None) -> list:
    """The Claims rows whose evidence is in ``chapter``, in the Claims page's order."""
    from .claims import CLAIMS, ORDER, get_claim

    return [get_claim(k, results) for k in ORDER if CLAIMS[k][0]["chapter"] == chapter]


def verdict_tally(rows: Sequence) -> str:
    """``"5 reproduced, 2 partly, ..."`` in the order of the verdicts' severity."""
    from .claims import VERDICTS

    tally = Counter(r.verdict for r in rows)
    return ", ".join(f"{tally[v]} {v}" for v in VERDICTS if tally[v])


def _cell_text(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def claims_markdown(rows: Sequence, *, chapters: str | os.PathLike | None = None,
                    prefix: str = "") -> str:
    """The Claims table (one short line per row) and, below it, each row's full account.

    The table cells hold the paper's statement, the headline number (interval, n), the
    verdict and a link to the chapter's section; what was measured in full, and the rule
    of the verdict, follow in one folded box per row.
    """
    chapters = Path(chapters) if chapters is not None else ROOT / "chapters"
    lines = ["| paper (figure) | headline number [95% interval], n | verdict | evidence |",
             "|---|---|---|---|"]
    for r in rows:
        cells = [f"{r.paper} ({r.source})", f"{claim_label(r)}: {headline(r)}",
                 f"**{r.verdict}**", _link(r, chapters, prefix=prefix)]
        lines.append("| " + " | ".join(_cell_text(c) for c in cells) + " |")
    lines += ["", "### What each row measured", ""]
    for r in rows:
        lines += [f"```{{admonition}} {r.source}: {r.verdict}", ":class: note dropdown", "",
                  _cell_text(r.measured), "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ provenance


def _meta(path: Path) -> dict | None:
    """The metadata of a results file, verified as :func:`read_table` verifies it."""
    from .results import MissingResultsError, read_json, read_table

    if path.suffix == ".csv":
        try:
            return read_table(path)[1]
        except (MissingResultsError, OSError, ValueError):
            return None
    if path.suffix == ".json":
        try:
            obj = read_json(path)
        except (OSError, ValueError):
            return {}
        return obj.get("metadata", {}) if isinstance(obj, dict) else {}
    return {}


def _span(values: Iterable[str]) -> str:
    vals = sorted(set(values))
    if not vals:
        return ""
    return vals[0] if len(vals) == 1 else f"{vals[0]} to {vals[-1]}"


def provenance_box(paths: Iterable[str | os.PathLike], *, root: str | os.PathLike | None = None,
                   fold: int = 4) -> str:
    """A compact Markdown provenance box for the results files a page read.

    One environment line (the versions and devices, shared by the files), then one line per
    folder and command: the files, when they were made, their seeds and the command that
    regenerates them. Files without verifiable metadata are listed as such. More than
    ``fold`` lines fold the box.
    """
    root = Path(root) if root is not None else ROOT
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    problems: list[str] = []
    versions: dict[str, set[str]] = {}
    devices: set[str] = set()
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        try:
            shown = p.resolve().relative_to(root.resolve())
        except ValueError:
            shown = p
        if not p.exists():
            problems.append(f"`{shown}`: **missing**")
            continue
        meta = _meta(p)
        if meta is None:
            problems.append(f"`{shown}`: **unverified** (its metadata is missing or does not "
                            "carry its hash)")
            continue
        for k, v in (meta.get("versions") or {}).items():
            versions.setdefault(k, set()).add(str(v))
        if meta.get("device"):
            devices.add(str(meta["device"]))
        key = (str(shown.parent), str(meta.get("command") or ""))
        groups.setdefault(key, []).append((shown.name, meta))
    lines = []
    for (folder, command), files in groups.items():
        names = [n for n, _ in files]
        listed = ", ".join(f"`{n}`" for n in names[:4]) + (
            f" and {len(names) - 4} more" if len(names) > 4 else "")
        made = _span(str(m.get("created_utc", ""))[:10] for _, m in files if m.get("created_utc"))
        seeds = sorted({str(m["seed"]) for _, m in files if m.get("seed") is not None})
        parts = [f"`{folder}/`: {listed}"]
        if made:
            parts.append(f"made {made}")
        if seeds:
            parts.append(f"seed {', '.join(seeds)}")
        line = "- " + "; ".join(parts) + "."
        if command:
            line += f" Regenerate: `{command}`"
        lines.append(line)
    lines += [f"- {p}." for p in problems]
    env = "; ".join(f"{k} {_span(v)}" for k, v in sorted(versions.items()))
    head = ["```{admonition} Provenance",
            ":class: note dropdown" if len(lines) > fold else ":class: note", ""]
    if env or devices:
        head.append(f"Environment: {env}" + (f"; on {', '.join(sorted(devices))}" if devices
                                              else "") + ".")
        head.append("")
    return "\n".join(head + lines + ["```"])
