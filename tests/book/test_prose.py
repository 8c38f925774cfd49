"""No hand-typed numbers in the chapters' prose.

Every number a chapter states comes from ``glue`` or a table. This test reads the Markdown
cells of every chapter and fails on a number written by hand: a decimal, a percentage or an
integer of two or more digits, outside mathematics, code, roles (``{glue:text}``,
``{cite:p}``, ...), directive options, labels and references to the paper's figures and
sections (the text of admonitions and figure captions is prose and is read), unless the phrase around it is on the allow-list below. The allow-list holds
definitions (the 32 px of the stand-in, the 95% of every interval, the paper's own settings),
never a measured value; an entry that no chapter uses any more fails too, so the list
cannot go stale.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.py"))

ALLOWED: dict[str, str] = {
    # phrase (a regular expression matched on the prose) -> why it is not a measurement
    r"\b95%": "the level of every interval in the book",
    r"\b\d+ px\b": "image, patch and shift sizes: the setup, not a result",
    r"\b\d+×\d+(?:/\d+)?": "grid and kernel sizes (and strides) of the architectures",
    r"\bstride[- ]16\b": "the threshold that defines the coarse group of modules",
    r"\b100 probes\b|\b100-probe\b": "the paper's number of probes per image",
    r"\b100 epochs\b|\b100-epoch\b": "the paper's fine-tuning length",
    r"\ball 70,000 digits\b": "the size of MNIST",
    r"\bthe MAE paper hides 75%\. With\s+75% masking": "the MAE paper's masking ratio, tried here",
    r"\bat least 95%|\bat least 90%": "the rotated-MNIST chapter's accuracy targets, set before the run",
    r"\bbelow 60%": "the accuracy under which the architectures chapter counts a model",
    r"\bwithin 5% of\b|\blast 10% of steps\b|\bthe 10% of steps\b|\b10% of its value plus 1% of\b":
        "the convergence rule of the zoo (lielib.book.zoo), stated as it is defined",
    r"\bbelow 100%": "the bound a share cannot exceed",
    r"\(32 / 32\)": "the arithmetic of a 32 px input at stride 32",
    r"\bof 224 columns\b|\bof 28;": "the widths of the images whose columns are counted",
}

_MATH = (re.compile(r"\$\$.*?\$\$", re.DOTALL), re.compile(r"\$[^$\n]+\$"))
_DIRECTIVES = re.compile(r"```\{(?:math|glue:md|glue:math)\}.*?```", re.DOTALL)  # not prose
_FENCES = re.compile(r"^(?:```+|~~~+|:::+)(?:\{[\w:-]+\}.*)?$", re.MULTILINE)  # other fences: content kept
_CODE = re.compile(r"(?:\{[\w:-]+\})?`[^`]*`")  # code spans and roles: glue, cite, ref, doc
_OPTIONS = re.compile(r"^:[\w-]+:.*$", re.MULTILINE)  # directive options (:name:, :alt:, :class:)
_LABELS = re.compile(r"^\([\w-]+\)=\s*$", re.MULTILINE)
_REFERENCES = re.compile(
    r"\b(?:Figures?|Fig\.|Sections?|Tables?|Chapter|Equation|Appendix)\s+\d+[a-z]?"
    r"(?:\s*(?:,|and|or)\s*\d+[a-z]?)*", re.IGNORECASE)
_MODEL_NAMES = re.compile(r"\b[A-Za-z][\w]*-\d+\b")  # ResNet-18, top-1, Lite-0 ...
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*(?:\s?%)?(?![\w])")


def prose(markdown: str) -> str:
    """The Markdown cell with math, code, roles, options, labels and references blanked."""
    text = markdown
    for pattern in (*_MATH, _DIRECTIVES, _FENCES, _CODE, _OPTIONS, _LABELS, _REFERENCES,
                    _MODEL_NAMES):
        text = pattern.sub(" ", text)
    return text


def hand_typed(text: str) -> list[tuple[str, int]]:
    """``(number, position)`` of every number in ``text`` that looks measured: a decimal, a
    percentage or an integer of two or more digits (single digits count things)."""
    found = []
    for m in _NUMBER.finditer(text):
        num = m.group()
        if "." in num or "%" in num or len(num.replace(",", "")) >= 2:
            found.append((num, m.start()))
    return found


def unexplained(text: str, allowed: dict[str, str] = ALLOWED) -> tuple[list[str], set[str]]:
    """The hand-typed numbers of ``text`` (with context) not covered by ``allowed``, and the
    allow-list entries that covered something."""
    spans, used = [], set()
    for pattern in allowed:
        for m in re.finditer(pattern, text):
            spans.append((m.start(), m.end()))
            used.add(pattern)
    bad = []
    for num, pos in hand_typed(text):
        if not any(a <= pos < b for a, b in spans):
            bad.append(f"{num!r} in '...{' '.join(text[max(0, pos - 40):pos + 25].split())}...'")
    return bad, used


def chapter_prose(path: Path) -> str:
    nb = jupytext.read(path)
    return "\n\n".join(prose(c.source) for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_hand_typed_numbers_in_the_prose(path: Path) -> None:
    bad, _ = unexplained(chapter_prose(path))
    assert not bad, (f"chapters/{path.name} states numbers by hand; glue them from the results "
                     "(myst_nb.glue and {glue:text}) or, for a definition, add the phrase to "
                     "ALLOWED in this file:\n  " + "\n  ".join(bad))


def test_every_allowed_phrase_is_still_used() -> None:
    used: set[str] = set()
    for path in CHAPTERS:
        used |= unexplained(chapter_prose(path))[1]
    assert not set(ALLOWED) - used, f"allow-list entries no chapter uses: {set(ALLOWED) - used}"


@pytest.mark.parametrize(("markdown", "flagged"), [
    ("The slope is 0.333 over the models.", ["0.333"]),
    ("The zoo has 50 models and 12% of them failed.", ["50", "12%"]),
    ("Test accuracy on all 10,000 test images.", ["10,000"]),
    ("One seed, two sizes, epoch 1 and epoch 0.", []),
    ("Math $R^2 = 0.333$ and $$x = 12.5$$ is not prose.", []),
    ("Quoted {glue:text}`slope:.3g` and `lee(x, 25)` and {cite:p}`gruver2023lie`.", []),
    ("Figure 4c and Figures 1 and 2 of the paper; Section 3.", []),
    ("ResNet-50 and its top-1 accuracy.", []),
    ("(sec-a-label)=\n## A heading", []),
    ("```{glue:figure} fig\n:alt: 12 dots\n\nA caption with 0.5 in it.\n```", ["0.5"]),
    ("```{note}\nA note says 12.5.\n```\n```{glue:md} box\n:format: myst\n```", ["12.5"]),
    ("Every share has a 95% interval at 32 px on a 7×7/2 stem.", []),
])
def test_the_scan_flags_numbers_in_prose_only(markdown: str, flagged: list[str]) -> None:
    bad, _ = unexplained(prose(markdown))
    assert [b.split(" in ")[0].strip("'") for b in bad] == flagged
