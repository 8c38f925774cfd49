# Two entry points (see README): `make book` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1

.PHONY: book test lint clean-book browser data

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

MATHJAX := book_static/mathjax/.version

# Offline MathJax (npm package mathjax@3.2.2) for mathjax_path in _config.yml: fetched once
# into book_static/mathjax (from .mathjax/, the npm tarball), never tracked by git.
$(MATHJAX): tools/fetch_mathjax.sh
	tools/fetch_mathjax.sh

# The book's data (MNIST, Fashion-MNIST, the photos; about 50 MB), checked against
# lielib/book/datafiles/checksums.csv on every run: $LIELIB_DATA if set, else ../shared/data
# beside the checkout when it exists (only checked), else $LIELIB_CACHE/data
# (~/.cache/lielib/data); what is missing is fetched once from the packages that hold it.
data: $(STAMP)
	$(BIN)/python -m lielib.book.fetch

book: $(STAMP) $(MATHJAX) data
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going

# Headless Chromium for tests/book/test_book.py (apt-get install chromium when missing, as root).
browser:
	tools/ensure_chromium.sh >/dev/null

test: book browser
	$(BIN)/ruff check lielib tests chapters
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

lint: $(STAMP)
	$(BIN)/ruff check lielib tests chapters

clean-book:
	rm -rf _build
