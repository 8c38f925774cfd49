#!/usr/bin/env bash
# Make sure a headless Chromium is available for the browser test (tests/test_book.py).
# Uses $CHROMIUM if set, else `chromium` on PATH; installs Debian's `chromium` with apt-get
# when missing and we are root. Prints the browser's path.
set -euo pipefail
if [[ -n "${CHROMIUM:-}" ]]; then
    command -v "$CHROMIUM" >/dev/null || { echo "CHROMIUM=$CHROMIUM is not executable" >&2; exit 1; }
    command -v "$CHROMIUM"
    exit 0
fi
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; exit 0; fi
done
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing: install Debian's 'chromium' package (sudo apt-get install chromium)" \
         "or set CHROMIUM=/path/to/chrome" >&2
    exit 1
fi
echo "installing chromium with apt-get (one time) ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
command -v chromium
