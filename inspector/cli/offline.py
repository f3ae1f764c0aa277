"""Offline subcommands: ``score``, ``eval`` and ``demo`` (the ``gallery`` ones are in :mod:`inspector.cli.gallery`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from inspector.cli.gallery import (
    LEAVE_OUT_HELP,
    add_calibration_options,
    add_config_option,
    add_gallery_commands,
    command_config,
    step_bars,
)
from inspector.core.names import EXIT_OK, EXIT_TARGET_MISSED

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it


def cmd_score(args: argparse.Namespace) -> int:
    """Score images against a calibrated gallery; one line (or JSON record) per image, in input order."""
    from inspector.quality.scoring import score_paths

    cfg = command_config(args)
    return score_paths(args.gallery, args.images, cfg.runtime, args.json, args.overlay_dir, sys.stdout)


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded demo: the daemon on a synthetic line video (or, with --offline, gallery + offline scoring)."""
    if args.offline:
        from inspector.demo.offline import run_demo

        return run_demo(args.workdir, sys.stdout)
    from inspector.demo.daemon import run_daemon_demo

    return run_daemon_demo(args.workdir, sys.stdout)


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate on labelled MVTec-layout data, write the report, say first whether each gallery meets its
    target; exit 4 when one misses it."""
    from inspector.quality.evaluate import run_eval
    from inspector.quality.report import category_verdict

    cfg = command_config(args)
    progress, bars = step_bars()
    start = time.monotonic()
    try:
        evals, metrics = run_eval(
            args.data, args.category, args.out, cfg, progress, with_maps=args.save_maps, gallery=args.gallery
        )
    finally:
        for bar in bars:
            bar.close()
    verdicts = [category_verdict(ev) for ev in evals]
    for _, line in verdicts:
        print(line)
    for name, m in metrics.items():
        print(name + "  " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))
    print(f"report: {args.out / 'report.md'} (metrics.json beside it; {time.monotonic() - start:.0f} s)")
    return EXIT_OK if all(meets for meets, _ in verdicts) else EXIT_TARGET_MISSED


def add_offline_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``gallery``, ``score``, ``eval`` and ``demo``."""
    add_gallery_commands(sub)
    s = sub.add_parser("score", help="score images against a gallery")
    s.add_argument("--gallery", type=Path, required=True, help="calibrated gallery file")
    s.add_argument("images", type=Path, nargs="+", help="image files, or folders (their images)")
    s.add_argument("--json", action="store_true", help="one JSON record per image (wire field names)")
    s.add_argument("--overlay-dir", type=Path, default=None, help="write heatmap overlay and mask PNGs here")
    add_config_option(s)
    s.set_defaults(func=cmd_score)

    e = sub.add_parser(
        "eval",
        help="evaluate on labelled data (MVTec layout), write a report; exit 4 when a target is missed",
    )
    e.add_argument("--data", type=Path, required=True, help="a category folder or a folder of categories")
    e.add_argument(
        "--gallery", type=Path, default=None,
        help="evaluate this gallery as it will run (its settings and thresholds) on one category's test/; "
        "without it a gallery is built and calibrated from each category's train/good",
    )  # fmt: skip
    add_calibration_options(e, "building from train/good: " + LEAVE_OUT_HELP)
    e.add_argument("--category", action="append", default=None, help="only these categories (repeatable)")
    e.add_argument("--out", type=Path, required=True, help="report folder")
    e.add_argument(
        "--save-maps", action="store_true",
        help="also write maps_<category>.npz (anomaly maps, masks, scores; np.load with allow_pickle=False)",
    )  # fmt: skip
    add_config_option(e)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="run the embedded synthetic demo (no camera, GPU or external data)")
    d.add_argument(
        "--workdir", type=Path, default=Path("demo"), help="folder for the generated data (default demo/)"
    )
    d.add_argument(
        "--offline",
        action="store_true",
        help="build a gallery and score test images instead of running the daemon",
    )
    d.set_defaults(func=cmd_demo)
