"""The book's reporting helpers: numbers, intervals, tables, verdicts and provenance."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lielib.book.claims import Claim
from lielib.book.report import (
    HEADLINES,
    TABLE_CLASS,
    claim_label,
    claims_markdown,
    fmt_ci,
    fmt_count,
    format_frame,
    headline,
    provenance_box,
    section_label,
    sig,
    table_html,
    verdict_markdown,
    verdict_tally,
)
from lielib.book.results import metadata, write_table


@pytest.mark.parametrize(("x", "digits", "text"), [
    (0.5, 3, "0.500"),
    (0.123456, 3, "0.123"),
    (0.123456, 2, "0.12"),
    (2.30258, 3, "2.30"),
    (9.996, 3, "10.0"),
    (1234.5, 3, "1,230"),
    (-12.069, 3, "-12.1"),
    (3.39e-2, 3, "0.0339"),
    (1.2345e-5, 3, "1.23e-5"),
    (2.5e6, 2, "2.5e6"),
    (0.0, 3, "0.00"),
    (60000, 3, "60,000"),
    (np.int64(7), 3, "7"),
    (True, 3, "yes"),
    (float("nan"), 3, "–"),
    (None, 3, "–"),
    ("text", 3, "text"),
], ids=lambda v: repr(v))
def test_sig(x, digits, text):
    assert sig(x, digits) == text


def test_interval_shares_one_number_of_decimals():
    # the page once printed "-1 [-2.16, 0.191]"
    assert fmt_ci(-1.0, -2.16, 0.191) == "-1.00 [-2.16, 0.19]"
    assert fmt_ci(-0.1769, -0.424, 0.1002) == "-0.177 [-0.424, 0.100]"
    assert fmt_ci(-0.1754, -0.4156, 0.1023, digits=2) == "-0.18 [-0.42, 0.10]"
    assert fmt_ci(0.104, 0.0426, 0.188, digits=2, percent=True) == "10 [4, 19]%"
    assert fmt_ci(2e-5, 1e-5, 3.5e-5) == "2.00 [1.00, 3.50]e-5"
    assert fmt_ci(1.0, float("nan"), 2.0) == "1.00 [–, 2.00]"
    assert fmt_ci(float("nan"), float("nan"), float("nan")) == "–"
    assert "\n" not in fmt_ci(12345.0, 10000.0, 15000.0)


def test_fmt_count():
    assert fmt_count(50000) == "50,000" and fmt_count(float("nan")) == "–"


def test_format_frame_uses_the_columns_formats():
    frame = pd.DataFrame({"T": [0.5, 2.0], "acc": [0.9123, 0.5], "name": ["a", "b"]})
    out = format_frame(frame, {"acc": "{:.1%}"})
    assert out["T"].tolist() == ["0.500", "2.00"]
    assert out["acc"].tolist() == ["91.2%", "50.0%"]
    assert out["name"].tolist() == ["a", "b"]
    with pytest.raises(KeyError, match="nope"):
        format_frame(frame, {"nope": "{}"})


def test_table_html_wraps_escapes_and_folds():
    frame = pd.DataFrame({"model <x>": ["a&b", "c"], "LEE [95% CI]": ["0.10 [0.05, 0.20]", "1"],
                          "n": [3, 4]})
    text = table_html(frame)
    assert text.startswith(f'<div class="{TABLE_CLASS}-wrap"><table class="{TABLE_CLASS}">')
    assert "model &lt;x&gt;" in text and "a&amp;b" in text
    assert '<td class="num">0.10 [0.05, 0.20]</td>' in text and "<td>c</td>" in text
    assert "dataframe" not in text and "<details" not in text
    long = table_html(pd.DataFrame({"k": range(20)}), collapse=10, summary="All twenty")
    assert long.startswith(f'<details class="{TABLE_CLASS}-fold"><summary>All twenty</summary>')
    indexed = table_html(pd.DataFrame({"v": [1.5]}, index=pd.Index(["r"], name="row")), index=True)
    assert "<th>row</th>" in indexed and "<td>r</td>" in indexed


def _row(key="fig4b", **kw) -> Claim:
    base = Claim(key=key, source="Figure 4b", paper="The embedding dominates", chapter="aliasing",
                 section="(b) Token models", measured="Lowest embedding share 44.8 [17.4, 68.0]%.",
                 value=44.837, lo=17.4, hi=67.96, n=20, verdict="reproduced")
    return replace(base, **kw)


def test_headline_and_label():
    row = _row()
    assert "\u00a0" in headline(row) and headline(row).count(" ") == 1  # breaks only before n
    assert headline(row).replace("\u00a0", " ") == "44.8 [17.4, 68.0]%, n = 20"
    assert claim_label(row) == HEADLINES["fig4b"][0]
    rewritten = _row(measured="Median share 44.8 [17.4, 68.0]% of the patch embedding.")
    assert claim_label(rewritten) == "Median share"  # the phrase is gone: the label is not kept
    assert headline(_row(key="family", lo=None, hi=None, value=0.00117)).replace(
        "\u00a0", " ") == "0.00117, n = 20"
    assert headline(_row(value=None)) == "–"
    new = _row(key="new-row", measured="Ratio of the twins 1.2 [1.0, 1.4].")
    assert claim_label(new) == "Ratio of the twins"


def test_links_land_on_the_section_when_the_chapter_has_the_label(tmp_path: Path):
    assert section_label("(b) Token models: the patch embedding") == "sec-b-token-models-the-patch-embedding"
    (tmp_path / "aliasing.py").write_text("# %% [markdown]\n# (sec-b-token-models)=\n# ## (b) Token models\n")
    box = verdict_markdown([_row()], chapters=tmp_path)
    assert box.startswith("```{admonition} Verdict")
    assert "**Figure 4b: reproduced.**" in box and "See {ref}`sec-b-token-models`." in box
    other = verdict_markdown([_row(section="(c) Elsewhere")], chapters=tmp_path)
    assert "{doc}`aliasing`, (c) Elsewhere" in other  # no label: the chapter, not a dead link


def test_claims_markdown_cells_are_short_and_details_folded(tmp_path: Path):
    long = _row(measured="Lowest embedding share 44.8 [17.4, 68.0]%. " + "word | " * 200)
    text = claims_markdown([long], chapters=tmp_path, prefix="")
    table = text.split("\n\n")[0].splitlines()
    assert len(table) == 3 and "word" not in table[2]
    assert "44.8 [17.4, 68.0]%, n = 20" in table[2].replace("\u00a0", " ")
    assert ":class: note dropdown" in text and "word / word" in text


def test_verdict_tally_orders_by_verdict():
    rows = [_row(), _row(verdict="partly"), _row(), _row(verdict="reversed")]
    assert verdict_tally(rows) == "2 reproduced, 1 partly, 1 reversed"


def test_provenance_box_has_one_environment_line(tmp_path: Path):
    folder = tmp_path / "results" / "x"
    for k in range(6):
        write_table(folder / f"t{k}.csv", pd.DataFrame({"a": [k]}),
                    metadata(command="python -m make x", seed=0, device="cpu"))
    (folder / "bad.csv").write_text("a\n1\n")
    paths = [*sorted(folder.glob("t*.csv")), folder / "bad.csv", folder / "gone.csv"]
    box = provenance_box(paths, root=tmp_path)
    lines = box.splitlines()
    assert lines[0] == "```{admonition} Provenance" and lines[-1] == "```"
    assert sum(line.startswith("Environment:") for line in lines) == 1
    assert "torch" in box and "on cpu" in box
    group = [line for line in lines if line.startswith("- `results/x/`")]
    assert len(group) == 1 and "and 2 more" in group[0] and "seed 0" in group[0]
    assert group[0].count("python -m make x") == 1
    assert "`results/x/bad.csv`: **unverified**" in box and "`results/x/gone.csv`: **missing**" in box
    assert ":class: note\n" in box  # three lines: not folded
    json_meta = tmp_path / "r.json"
    json_meta.write_text(json.dumps({"metadata": {"command": "c", "created_utc": "2026-01-02T00"}}))
    assert "made 2026-01-02" in provenance_box([json_meta], root=tmp_path)
    assert ":class: note dropdown" in provenance_box(paths, root=tmp_path, fold=2)


def test_sig_round_trips_within_its_figures():
    rng = np.random.default_rng(0)
    for x in rng.lognormal(0, 4, 200) * rng.choice([-1, 1], 200):
        assert math.isclose(float(sig(x, 3).replace(",", "")), x, rel_tol=6e-3)


def test_headline_shows_the_figures_that_differ():
    row = _row(key="fig4d", value=0.99983, lo=0.99949, hi=0.99988, n=193)
    assert headline(row).replace("\u00a0", " ") == "0.9998 [0.9995, 0.9999], n = 193"
