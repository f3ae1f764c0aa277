"""``python -m inspector.cli``: the same as the ``inspector`` console script."""

import sys

from inspector.cli.main import main

sys.exit(main())
