"""``python -m easel`` is the ``easel`` command."""

import sys

from .cli import main

sys.exit(main())
