"""Demo-data benchmark: milliseconds per synthetic part render, per defect kind, at a given size.

The demo, the tests and the daemon benchmark all render parts with ``inspector.demo.data.render_part``; this
measures it (it was a timed unit test before, which failed on busy CI cores).

    .venv/bin/python tools/bench_render.py            # 100 renders at 256 px
    .venv/bin/python tools/bench_render.py --size-px 512 --renders 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from inspector.demo.parts import DEFECT_TYPES, render_part

MS_PER_S = 1000.0


def main(argv: list[str] | None = None) -> int:
    """Render ``--renders`` parts cycling through good and every defect kind; print ms per render."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--renders", type=int, default=100, help="parts rendered in all")
    parser.add_argument("--size-px", type=int, default=256, help="image side in pixels")
    args = parser.parse_args(argv)
    kinds = [None, *DEFECT_TYPES]
    per_kind: dict[str, list[float]] = {str(k or "good"): [] for k in kinds}
    started = time.perf_counter()
    for i in range(args.renders):
        kind = kinds[i % len(kinds)]
        t0 = time.perf_counter()
        render_part(np.random.default_rng(i), args.size_px, kind)
        per_kind[str(kind or "good")].append((time.perf_counter() - t0) * MS_PER_S)
    total_s = time.perf_counter() - started
    print(
        f"{args.renders} renders at {args.size_px} px in {total_s:.2f} s ({total_s * MS_PER_S / args.renders:.1f} ms each)"
    )
    for kind, times in per_kind.items():
        if times:
            print(
                f"  {kind:14s} median {statistics.median(times):6.1f} ms  max {max(times):6.1f} ms  ({len(times)} renders)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
