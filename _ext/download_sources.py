"""Sphinx extension: offer every executed chapter as ``.ipynb`` beside its ``.py`` source.

sphinx-book-theme's download menu lists ``context["ipynb_source"]`` when it is set, but it
sets it only for MyST-Markdown notebooks. Chapters here are jupytext ``.py`` files, so for
each page that MyST-NB executed, this copies the executed notebook from
``_build/jupyter_execute/<page>.ipynb`` to ``_build/html/_sources/<page>.ipynb`` and sets
the context key. The ``.py`` source itself is copied by Sphinx (``html_copy_source``) to
``_sources/<page>.py`` (the theme sets an empty ``html_sourcelink_suffix``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

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
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # Before sphinx-book-theme builds its header buttons (priority 501).
    app.connect("html-page-context", _add_ipynb, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "0.1"}
