"""``python -m lielib.book.aliasing``: see :mod:`lielib.book.aliasing.cli`."""

import sys

from .cli import main

sys.exit(main())
