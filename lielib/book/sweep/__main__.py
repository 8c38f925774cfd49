"""``python -m lielib.book.sweep``."""

import sys

from .cli import main

sys.exit(main())
