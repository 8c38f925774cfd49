#!/usr/bin/env bash
# Put an offline copy of MathJax 3.2.2 into book_static/mathjax/ (served by the book as
# _static/mathjax/, see mathjax_path in _config.yml). Gets the npm package once with
# `npm pack` (npm checks its integrity) into .mathjax/, then copies only what the browser
# loads: the tex-mml-chtml component, the TeX/MathML extensions it may autoload, the CHTML
# woff fonts, the menu, the accessibility modules and the speech-rule engine (about 7 MB).
# Idempotent: does nothing when the copy of this version is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.2.2
DEST=book_static/mathjax
STAMP=$DEST/.version
if [[ -f $STAMP && "$(cat "$STAMP")" == "$VERSION" && -f $DEST/tex-mml-chtml.js ]]; then
    touch "$STAMP"  # newer than this script: make need not ask again
    exit 0
fi
command -v npm >/dev/null || { echo "npm is needed once to fetch MathJax $VERSION (apt-get install npm)" >&2; exit 1; }
CACHE=.mathjax
TGZ=$CACHE/mathjax-$VERSION.tgz
if [[ ! -f $TGZ ]]; then
    mkdir -p "$CACHE"
    (cd "$CACHE" && npm pack --silent "mathjax@$VERSION" >/dev/null)
fi
SRC=$CACHE/package-$VERSION
rm -rf "$SRC" && mkdir -p "$SRC"
tar -xzf "$TGZ" -C "$SRC" --strip-components=1 package/es5 package/LICENSE
ES5=$SRC/es5
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/input/tex" "$DEST.tmp/input/mml" "$DEST.tmp/output/chtml"
cp "$ES5/tex-mml-chtml.js" "$SRC/LICENSE" "$DEST.tmp/"
cp -r "$ES5/input/tex/extensions" "$DEST.tmp/input/tex/"
cp -r "$ES5/input/mml/extensions" "$DEST.tmp/input/mml/"
cp -r "$ES5/output/chtml/fonts" "$DEST.tmp/output/chtml/"
cp -r "$ES5/ui" "$ES5/a11y" "$ES5/sre" "$DEST.tmp/"
echo "$VERSION" > "$DEST.tmp/.version"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
rm -rf "$SRC"
echo "MathJax $VERSION -> $DEST ($(du -sh "$DEST" | cut -f1))"
