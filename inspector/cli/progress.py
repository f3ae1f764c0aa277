"""Progress bars on stderr, shown only when stderr is a terminal (never in logs, pipes or CI output)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(total: int, desc: str) -> tqdm[Any]:
    """A bar of ``total`` images on stderr; disabled (prints nothing) when stderr is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
        disable=not sys.stderr.isatty(),
    )
