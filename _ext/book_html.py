"""Sphinx extension for the book's HTML: chapter downloads, and no duplicated scripts.

1. sphinx-book-theme's download menu lists ``context["ipynb_source"]`` when it is set, but
   it sets it only for MyST-Markdown notebooks. Chapters here are jupytext ``.py`` files,
   so for each page that MyST-NB executed this writes the executed notebook (the one in
   ``_build/jupyter_execute/<page>.ipynb``, with the outputs from the execution cache merged
   in) to ``_build/html/_sources/<page>.ipynb`` and sets the key. The ``.py`` source itself is copied by Sphinx (``html_copy_source``) to
   ``_sources/<page>.py`` (the theme sets an empty ``html_sourcelink_suffix``).
2. With Jupyter Book 1.0.4 some extensions' inline scripts reach every page twice
   (sphinx-thebe's ``const THEBE_JS_URL = ...`` then throws a SyntaxError in the browser);
   identical script entries are dropped, keeping the first.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

__all__ = ["setup"]


def _add_ipynb(app, pagename, templatename, context, doctree) -> None:
    if app.builder.format != "html" or doctree is None:
        return
    source = Path(app.env.doc2path(pagename))
    if source.suffix != ".py":
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.is_file():
        raise FileNotFoundError(
            f"{executed} is missing: MyST-NB did not write the executed notebook of "
            f"{pagename}; rebuild with `make clean-book book`"
        )
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(executed, as_version=4)
    if not any(cell.get("outputs") for cell in nb.cells):
        # execute_notebooks: cache keeps the outputs in jupyter-cache, not in this file.
        cache_path = getattr(getattr(app.env, "mystnb_config", None), "execution_cache_path", "")
        if cache_path and Path(cache_path).is_dir():
            from jupyter_cache import get_cache

            try:
                _, nb = get_cache(cache_path).merge_match_into_notebook(nb)
            except KeyError:
                pass  # not executed (execute_notebooks: off): offer the notebook as it is
    nbformat.write(nb, str(target))
    context["ipynb_source"] = f"{pagename}.ipynb"


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = (
            str(getattr(js, "filename", js) or ""),  # inline scripts: None or ""
            tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique  # in place: Sphinx restores its own list before the next page


def setup(app):
    # Before sphinx-book-theme builds its header buttons (priority 501).
    app.connect("html-page-context", _add_ipynb, priority=400)
    # Early: html-page-context stops at the first handler that returns a template name.
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "0.1"}
