"""The Claims page: every row computed from results/, and equal to what its chapter glues.

Three checks keep a row and its chapter in agreement:

* the glue names a row quotes exist in the chapter's source (a renamed glue fails);
* the row's numbers equal the chapter's own formulas applied to the committed tables
  (written here as the chapter writes them);
* the row's numbers equal those glued by the executed chapter: the notebooks the book
  build leaves under ``_build/`` when they are newer than the tables, and a fresh run of
  the chapter in the ``slow`` test.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lielib.book import claims
from lielib.book.claims import CLAIMS, ORDER, VERDICTS, all_claims, get_claim, sign_verdict
from lielib.book.paths import ROOT

RESULTS = ROOT / "results"
BUILT = ROOT / "_build" / "jupyter_execute" / "chapters"
ISSUE_ROWS = {"fig1-right", "family", "transformers", "fig1-centre", "fig4a", "fig4b", "fig4c",
              "fig4d", "metrics", "rotated-mnist", "ood", "size", "data-trend"}
ROWS = all_claims(RESULTS)


def glued_in_source(chapter: str) -> list[re.Pattern]:
    """One regex per ``glue("...")``, ``glue(f"...")`` or ``glue(glue_name("kind", ...))`` call
    of a chapter (``{x}`` -> ``\\w+``)."""
    source = (ROOT / "chapters" / f"{chapter}.py").read_text()
    names = re.findall(r'glue\(f?"([^"]+)"', source)
    patterns = [re.sub(r"\\\{[^}]*\\\}", r"\\w+", re.escape(n)) for n in names]
    # names built by lielib.book.claims.real_models.glue_name("<kind>", ...)
    patterns += [re.escape(k) + r"_\w+" for k in re.findall(r'glue\(glue_name\("([^"]+)"', source)]
    return [re.compile(p + "$") for p in patterns]


def glue_values(notebook_json: dict) -> dict[str, str]:
    """``name -> text/plain`` of every glued value in an executed notebook."""
    out = {}
    for cell in notebook_json.get("cells", []):
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if record:  # a fresh run keeps the mime prefix, a built book drops it
                prefix = record.get("mime_prefix", "")
                data = output["data"]
                out[record["name"]] = data.get(prefix + "text/plain", data.get("text/plain"))
    return out


def assert_same(row_key: str, name: str, ours: float, glued_text: str | None) -> None:
    assert glued_text is not None, (f"{row_key}: the chapter glues no {name!r}; update the row "
                                    "in lielib/book/claims/ or the chapter")
    theirs = float(glued_text.strip("'\""))
    assert math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12), (
        f"{row_key}: the Claims page has {name} = {ours!r}, the chapter {theirs!r}")


def test_every_claim_of_the_issue_has_one_row_in_order() -> None:
    assert set(ORDER) == set(CLAIMS) == ISSUE_ROWS
    assert [r.key for r in ROWS] == list(ORDER)


@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_row_is_complete_and_consistent(row: claims.Claim) -> None:
    assert row.verdict in VERDICTS and row.measured and row.paper and row.source
    assert (ROOT / "chapters" / f"{row.chapter}.py").is_file()
    if row.verdict == "not yet measured":
        assert row.value is None and row.measured.startswith("Not yet measured")
        return
    assert row.value is not None and row.n and row.files
    assert all((ROOT / f).is_file() for f in row.files)
    if row.lo is not None:
        assert row.lo <= row.value + 1e-9 and row.value <= row.hi + 1e-9
        assert "[" in row.measured, "an interval must be shown in the text"


def test_missing_tables_give_not_yet_measured(tmp_path: Path) -> None:
    rows = all_claims(tmp_path)
    assert {r.verdict for r in rows} == {"not yet measured"}
    assert all("results" in r.measured or "not there yet" in r.measured for r in rows)


@pytest.mark.parametrize("row", [r for r in ROWS if r.glued], ids=lambda r: r.key)
def test_glued_names_exist_in_the_chapter(row: claims.Claim) -> None:
    patterns = glued_in_source(row.chapter)
    for name, _ in row.glued:
        assert any(p.match(name) for p in patterns), f"chapters/{row.chapter}.py glues no {name}"


def test_aliasing_rows_equal_the_chapters_formulas_on_the_committed_tables() -> None:
    """The aliasing chapter's own formulas on the committed tables."""
    from lielib.book.aliasing.analysis import group_shares, read_budgets

    by_key = {r.key: dict(r.glued) for r in ROWS}
    md = pd.read_csv(RESULTS / "aliasing" / "methods.csv")
    md = md[md.module != "(residual)"]
    assert by_key["fig4d"]["rank_probe"] == pytest.approx(
        md[["exact", "probes"]].corr("spearman").iloc[0, 1], rel=1e-9)
    if not list((RESULTS / "aliasing" / "layerwise").glob("*-images.csv")):
        assert {r.verdict for r in ROWS if r.key in ("fig4a", "fig4b", "fig4c")} == {
            "not yet measured"}
        return
    modules, images, _ = read_budgets(RESULTS / "aliasing")
    sh = group_shares(images[(images.action == "translate_x") & (images.stencil == "paper")])
    fam = images.drop_duplicates("model").set_index("model").family
    nod = sh[sh.model.map(fam).eq("cnn") & (sh.group == "nonlinear_or_down")]
    assert by_key["fig4a"]["cnn_alias_min"] == pytest.approx(100 * nod.share.min(), rel=1e-9)
    res = modules[(modules.model == "zoo:resnet-large") & (modules.stencil == "paper")
                  & modules.action.isin(["translate_x", "rotate", "scale", "hyperbolic_rotate"])]
    res = res.assign(share=res["value"] / res.groupby("action")["value"].transform("sum"))
    ranks = res.pivot_table(index="module", columns="action", values="share")
    corr = ranks.corr("spearman").where(~np.eye(4, dtype=bool)).stack().mean()
    assert by_key["fig4c"]["geo_rank_corr"] == pytest.approx(corr, rel=1e-9)


def test_rotated_mnist_row_is_the_chapters_training_contrast() -> None:
    row = get_claim("rotated-mnist", RESULTS)
    if row.verdict == "not yet measured":
        pytest.skip(row.measured)
    con = pd.read_csv(ROOT / row.files[0])
    last = con[(con.question == "training") & (con.metric == "lee") & (con.b == "mae@1")]
    assert len(last) == 1 and row.value == last.difference.iloc[0] and row.n == last.n.iloc[0]
    assert (row.lo, row.hi) == (last.low.iloc[0], last.high.iloc[0])
    both = con[(con.question == "training") & con.a.str.startswith("mae@")
               & con.b.isin(["mae@1", "mae@0"])]
    kinds = {"reproduced" if r.high < 0 else "reversed" if r.low > 0 else "not reproduced"
             for r in both.itertuples()}
    assert row.verdict == (kinds.pop() if len(kinds) == 1 else "partly")


def _built(chapter: str, files: tuple[str, ...]) -> dict[str, str] | None:
    """Glued values of the built chapter, if it was built after its source and tables changed."""
    path = BUILT / f"{chapter}.ipynb"
    sources = (*files, f"chapters/{chapter}.py")
    if not path.is_file() or any((ROOT / f).stat().st_mtime > path.stat().st_mtime for f in sources):
        return None
    values = glue_values(json.loads(path.read_text()))
    glue_json = BUILT / f"{chapter}.glue.json"  # where myst-nb keeps the glued outputs
    if glue_json.is_file():
        values |= {k: v["data"].get("text/plain") for k, v in json.loads(glue_json.read_text()).items()}
    return values


@pytest.mark.parametrize("row", [r for r in ROWS if r.glued], ids=lambda r: r.key)
def test_rows_equal_the_built_chapters(row: claims.Claim) -> None:
    values = _built(row.chapter, row.files)
    if values is None:
        pytest.skip(f"no build of chapters/{row.chapter} newer than its tables (make book)")
    for name, ours in row.glued:
        assert_same(row.key, name, ours, values.get(name))


@pytest.mark.slow
@pytest.mark.parametrize("chapter", sorted({r.chapter for r in ROWS if r.glued}))
def test_rows_equal_a_fresh_run_of_the_chapter(chapter: str, tmp_path: Path) -> None:
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(ROOT / "chapters" / f"{chapter}.py")
    NotebookClient(nb, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "chapters")}}).execute()
    values = glue_values(json.loads(jupytext.writes(nb, fmt="ipynb")))
    for row in (r for r in ROWS if r.chapter == chapter):
        for name, ours in row.glued:
            assert_same(row.key, name, ours, values.get(name))


def _zoo(tmp_path: Path, slope: float) -> Path:
    """A synthetic retrained-zoo table: 12 models, LEE = 10^(slope * accuracy) times noise."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(12):
        fam = ("cnn", "vit", "mixer")[k % 3]
        acc = 0.6 + 0.03 * k
        for image in range(8):
            lee = 10 ** (slope * acc) * rng.lognormal(0, 0.1)
            rows.append({"model": f"m{k}", "family": fam, "kind": fam, "size": "small" if k < 6 else "base",
                         "n_train": 60000 if k % 2 == 0 or k >= 6 else 6000, "augment": "none",
                         "params": 1000 * (k + 1), "accuracy": acc, "step": 100, "final": True,
                         "converged": True, "image": image, "lee_translate_x": lee,
                         "lee_translate_y": lee, "lee_rotate": lee, "eq_t": -10 * np.log10(lee)})
    (tmp_path / "zoo").mkdir()
    (tmp_path / "architectures").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "architectures" / "zoo-lee.csv", index=False)
    pd.DataFrame({"name": [f"m{k}" for k in range(12)],
                  "test_acc": [0.6 + 0.03 * k for k in range(12)]}).to_csv(
        tmp_path / "zoo" / "accuracy.csv", index=False)
    return tmp_path


@pytest.mark.parametrize(("slope", "verdict"), [(-3.0, "reproduced"), (3.0, "reversed")])
def test_zoo_rows_read_the_new_zoo_when_present(tmp_path: Path, slope: float, verdict: str) -> None:
    results = _zoo(tmp_path, slope)
    row = get_claim("fig1-right", results)
    assert row.verdict == verdict and row.n == 12  # every converged model, as the chapter fits
    assert np.sign(row.value) == np.sign(slope) and row.lo <= row.value <= row.hi
    for key in ("family", "transformers", "metrics", "data-trend"):
        assert get_claim(key, results).verdict in VERDICTS[:4], key
    assert get_claim("metrics", results).verdict == "reproduced"  # EQ-T falls as LEE rises


def test_sign_verdict_reads_the_interval() -> None:
    assert sign_verdict(-2, -1, expect_negative=True) == "reproduced"
    assert sign_verdict(1, 2, expect_negative=True) == "reversed"
    assert sign_verdict(-1, 1, expect_negative=True) == "not reproduced"
    assert sign_verdict(1, 2, expect_negative=False) == "reproduced"
