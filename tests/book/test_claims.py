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
from lielib.book.claims import (
    CLAIMS,
    ORDER,
    VERDICTS,
    all_claims,
    combine_verdicts,
    get_claim,
    verdict_from_interval,
)
from lielib.book.paths import ROOT

RESULTS = ROOT / "results"
BUILT = ROOT / "_build" / "jupyter_execute" / "chapters"
PAPER_ROWS = {"fig1-right", "fig1-right-seeds", "within-family", "family", "fig1-right-companions",
              "confound", "transformers", "training", "fig1-centre", "fig4a", "fig4b", "fig4c",
              "fig4d", "twin", "metrics", "rotated-mnist", "ood", "size", "small-large",
              "data-trend", "data-passes", "shift"}
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


def test_every_claim_has_one_row_in_order() -> None:
    assert set(ORDER) == set(CLAIMS) == PAPER_ROWS
    assert [r.key for r in ROWS] == list(ORDER)


@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_row_is_complete_and_consistent(row: claims.Claim) -> None:
    assert row.verdict in VERDICTS and row.measured and row.paper and row.source
    assert (ROOT / "chapters" / f"{row.chapter}.py").is_file()
    if row.verdict == "not yet measured":
        assert row.value is None and row.measured.startswith("Not yet measured")
        return
    if row.verdict == "not testable offline":
        assert row.measured.startswith("Not testable offline") and row.files
        return
    assert row.value is not None and row.n and row.files
    assert "Rule" in row.measured, "a row states the rule its verdict applies"
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
    judged = con[(con.question == "training") & con.a.str.startswith("mae@") & (con.b == "mae@1")]
    kinds = [verdict_from_interval(r.low, r.high, -1) for r in judged.itertuples()]
    if "upright" not in " ".join(row.files) and "seed" not in " ".join(row.files):
        expected = combine_verdicts(kinds)
        assert row.verdict == ("partly" if expected == "reproduced" else expected)
    assert "epoch 0 (random head, not judged)" in row.measured


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


def _model_rows(name: str, kind: str, fam: str, n_train: int, acc: float, lee0: float,
                rng: np.random.Generator, **extra) -> list[dict]:
    rows = []
    for step, final in ((0, False), (938, True)):
        for image in range(8):
            lee = lee0 * rng.lognormal(0, 0.1) * (1.0 if final else 0.5)
            rows.append({"model": name, "family": fam, "kind": kind, "size": "small",
                         "n_train": n_train, "augment": "none", "condition": f"{n_train // 1000}k",
                         "params": 1000, "accuracy": acc, "step": step, "final": final,
                         "converged": True, "image": image, "lee_translate_x": lee,
                         "lee_translate_y": lee, "lee_rotate": lee, "rho_translate_x": 1.0 + lee,
                         "rho_translate_y": 1.0 + lee, "eq_t": -10 * np.log10(lee), **extra})
    return rows


def _synthetic(k: int, slope: float) -> tuple[str, str, str, int, float, float]:
    """Model ``k`` of the synthetic zoo: the first six carry the names of seeded models."""
    from lielib.book.zoo_runs import SEED_MODELS

    acc = 0.6 + 0.03 * k
    name = SEED_MODELS[k] if k < 6 else f"m{k}"
    return name, f"kind{k % 6}", ("cnn", "vit", "mixer")[k % 3], 60000 if k < 6 else 6000, \
        acc, 10 ** (slope * acc)


def _zoo(tmp_path: Path, slope: float) -> Path:
    """A synthetic zoo: 6 architectures (two per family) at 60k and 6k images, LEE =
    10^(slope * accuracy) times noise."""
    from lielib.book.results import write_table

    rng = np.random.default_rng(0)
    rows, records = [], []
    for k in range(12):
        name, kind, fam, n_train, acc, lee = _synthetic(k, slope)
        rows += _model_rows(name, kind, fam, n_train, acc, lee, rng)
        records.append({"name": name, "test_acc": acc, "converged": True, "steps": 938})
    write_table(tmp_path / "architectures" / "zoo-lee.csv", pd.DataFrame(rows), {"seed": 0})
    write_table(tmp_path / "zoo" / "accuracy.csv", pd.DataFrame(records), {"seed": 0})
    return tmp_path


def _run(results: Path, tag: str, models: list[tuple[str, str, str, int, float, float]],
         seed: int, passes: float) -> None:
    """Write run ``tag`` in the seed runs' layout: a record and a table per model."""
    from lielib.book.results import write_table

    rng = np.random.default_rng(seed)
    for name, kind, fam, n_train, acc, lee0 in models:
        created = f"2026-01-0{seed + 1}T00:00:00+00:00"
        path = results / "zoo" / "runs" / tag / "models" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metadata": {"created_utc": created},
                                    "record": {"test_acc": acc, "converged": True, "seed": seed,
                                               "steps": 100, "n_train": n_train}}))
        rows = _model_rows(name, kind, fam, n_train, acc, lee0, rng, train_seed=seed,
                           steps=100, passes=passes, lee_logits_translate_x=lee0,
                           lee_logits_translate_y=lee0)
        write_table(results / "architectures" / "zoo-lee" / "runs" / tag / f"{name}.csv",
                    pd.DataFrame(rows), {"trained_utc": created})


@pytest.mark.parametrize(("slope", "verdict"), [(-3.0, "reproduced"), (3.0, "reversed")])
def test_zoo_rows_read_the_new_zoo_when_present(tmp_path: Path, slope: float, verdict: str) -> None:
    results = _zoo(tmp_path, slope)
    row = get_claim("fig1-right", results)
    assert row.verdict == verdict and row.n == 12  # every converged model, as the chapter fits
    assert np.sign(row.value) == np.sign(slope) and row.lo <= row.value <= row.hi
    assert "intervals over the 6 architectures" in row.measured
    for key in ("family", "transformers", "metrics", "data-trend", "within-family", "confound",
                "training", "fig1-right-companions"):
        assert get_claim(key, results).verdict in VERDICTS[:4], key
    assert get_claim("metrics", results).verdict == "reproduced"  # EQ-T falls as LEE rises
    assert get_claim("data-passes", results).verdict == "not yet measured"


def test_seed_and_passes_runs_enter_when_present(tmp_path: Path) -> None:
    """Seed runs join seed 0 (hierarchical intervals, seeds counted); an equal-passes run
    turns its row from "not yet measured" into a verdict on the data-size slope."""
    from lielib.book import zoo_runs

    results = _zoo(tmp_path, -3.0)
    seeds, _ = zoo_runs.seed_models(results)
    assert set(seeds.train_seed) == {0}
    small = [_synthetic(k, -3.0) for k in range(4)]
    _run(results, "seed1", small, seed=1, passes=1.0)  # a run still going: 4 of 6 models
    seeds, _ = zoo_runs.seed_models(results)
    assert sorted(seeds.train_seed.value_counts().items()) == [(0, 6), (1, 4)]
    assert seeds.lee_logits_translate.notna().sum() == 4
    row = get_claim("fig1-right-seeds", results)
    assert "1 to 2 seeds per architecture" in row.measured and row.n == 10
    sizes = []
    for k in range(6):
        for n_train in (2000, 60000):  # at equal passes, LEE falls tenfold per decade of data
            sizes.append((f"p{k}-{n_train}", f"kind{k}", ("cnn", "vit", "mixer")[k % 3], n_train,
                          0.8, 10 ** (-np.log10(n_train))))
    _run(results, "passes2-seed0", sizes, seed=0, passes=2.0)
    row = get_claim("data-passes", results)
    assert row.verdict in ("reproduced", "partly") and row.value == pytest.approx(-1, abs=0.1)
    assert "At 2 passes" in row.measured and row.n == 12


def test_verdict_from_interval_reads_the_interval() -> None:
    assert verdict_from_interval(-2, -1, -1) == "reproduced"
    assert verdict_from_interval(1, 2, -1) == "reversed"
    assert verdict_from_interval(-1, 1, -1) == "not reproduced"
    assert verdict_from_interval(1, 2, 1) == "reproduced"
    assert verdict_from_interval(1.1, 1.5, 1, null=1.0) == "reproduced"
    assert verdict_from_interval(0.5, 0.9, 1, null=1.0) == "reversed"
    with pytest.raises(ValueError):
        verdict_from_interval(0, 1, 0)


def test_combine_verdicts() -> None:
    assert combine_verdicts(["reproduced", "reproduced"]) == "reproduced"
    assert combine_verdicts(["reproduced", "not reproduced"]) == "partly"
    assert combine_verdicts(["reproduced", "reversed"]) == "not reproduced"
    assert combine_verdicts(["reversed", "not reproduced"]) == "not reproduced"
