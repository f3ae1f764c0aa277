"""Command-line interface: gallery build/calibrate, score, demo (and the daemon's commands)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

OMP_WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
OMP_WAIT_POLICY_DEFAULT = "PASSIVE"

# The model worker shares CPU cores with the camera processes. With libgomp's default (threads spin while
# waiting), PyTorch on CPU became ~50x slower whenever another process was busy (measured on 2 cores: 650
# instead of 13 ms per frame); passive waiting removes that. libgomp reads the variable once, when torch is
# first imported, which is why the CLI sets it before anything imports torch. An explicit value in the
# environment (e.g. OMP_WAIT_POLICY=ACTIVE on a dedicated machine) wins.
os.environ.setdefault(OMP_WAIT_POLICY_ENV, OMP_WAIT_POLICY_DEFAULT)

from inspector.cli_daemon import add_daemon_commands
from inspector.proxy import add_proxy_command

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3  # score: at least one image could not be read
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: systemd must not restart on it


def _progress(total: int, desc: str) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, leave=False)


def _load_config(path: Path | None) -> Any:
    from inspector.config import load_config

    return load_config(path)


def cmd_gallery_build(args: argparse.Namespace) -> int:
    """Build a gallery from a folder of good images, then calibrate it leave-one-out."""
    from inspector.gallery_build import build_gallery, list_images

    cfg = _load_config(args.config)
    images = list_images(args.images)
    with _progress(len(images), "features") as bar:
        manifest = build_gallery(images, args.out, cfg.model, float16=args.float16, progress=bar.update)
    print(f"gallery {args.out}: {manifest.image_count} images, content {manifest.content_sha256[:12]}")
    if not args.no_calibrate:
        return _calibrate(args.out, cfg, None, manifest.image_count)
    return EXIT_OK


def _calibrate(gallery: Path, cfg: Any, normal: list[Path] | None, gallery_images: int) -> int:
    from inspector.gallery_build import calibrate_gallery

    with _progress(len(normal) if normal else gallery_images, "calibration") as bar:
        cal = calibrate_gallery(gallery, cfg.model, cfg.calibration, normal, progress=bar.update)
    print(
        f"calibrated ({cal.method}, {cal.n_images} normal images): image threshold {cal.image_threshold:.4f} "
        f"at target false-reject rate {cal.target_false_reject_rate:g}; pixel threshold {cal.pixel_threshold:.4f}"
    )
    return EXIT_OK


def cmd_gallery_calibrate(args: argparse.Namespace) -> int:
    """Calibrate (or re-calibrate) a gallery's thresholds."""
    from inspector.gallery import read_manifest
    from inspector.gallery_build import list_images

    cfg = _load_config(args.config)
    if args.target_frr is not None:
        cfg.calibration.target_false_reject_rate = args.target_frr
    normal = list_images(args.normal_dir) if args.normal_dir else None
    return _calibrate(args.gallery, cfg, normal, read_manifest(args.gallery).image_count)


def cmd_gallery_info(args: argparse.Namespace) -> int:
    """Validate a gallery and print its manifest."""
    from inspector.gallery import load_gallery

    gallery = load_gallery(args.gallery)
    manifest = gallery.manifest.model_dump(mode="json")
    if not args.sources:
        manifest["sources"] = f"{len(manifest['sources'])} files"
    print(json.dumps(manifest, indent=2))
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    """Score images against a calibrated gallery; one line (or JSON object) per image."""
    from inspector.scoring import score_paths

    cfg = _load_config(args.config)
    return score_paths(args.gallery, args.images, cfg.model, args.json, args.overlay_dir, sys.stdout)


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded demo: the daemon on a synthetic line video (or, with --offline, gallery + offline scoring)."""
    if args.offline:
        from inspector.demo import run_demo

        return run_demo(args.workdir, sys.stdout)
    from inspector.demo_daemon import run_daemon_demo

    return run_daemon_demo(args.workdir, sys.stdout)


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate galleries on labelled MVTec-layout data and write the report."""
    from inspector.evaluate import run_eval

    cfg = _load_config(args.config)
    bars: list[tqdm[Any]] = []

    def progress(desc: str, total: int) -> Any:
        for old in bars:
            old.close()
        bars.append(_progress(total, desc))
        return bars[-1].update

    try:
        metrics = run_eval(args.data, args.category, args.out, cfg, progress)
    finally:
        for bar in bars:
            bar.close()
    for name, m in metrics.items():
        print(name + "  " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))
    print(f"report: {args.out / 'report.md'}")
    return EXIT_OK


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="TOML config file (defaults when omitted)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="inspector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gal = sub.add_parser("gallery", help="build, calibrate and inspect galleries").add_subparsers(
        dest="gallery_command", required=True
    )
    b = gal.add_parser("build", help="build a gallery from known-good images")
    b.add_argument("--images", type=Path, required=True, help="folder of known-good images")
    b.add_argument("--out", type=Path, required=True, help="gallery file to write")
    b.add_argument("--float16", action="store_true", help="store features in float16 (half the size)")
    b.add_argument("--no-calibrate", action="store_true", help="skip leave-one-out calibration")
    _add_config(b)
    b.set_defaults(func=cmd_gallery_build)

    c = gal.add_parser("calibrate", help="set thresholds from normal images only")
    c.add_argument("--gallery", type=Path, required=True)
    c.add_argument("--normal-dir", type=Path, default=None, help="separate normal images (default: leave-one-out)")
    c.add_argument("--target-frr", type=float, default=None, help="target false-reject rate (default from config)")
    _add_config(c)
    c.set_defaults(func=cmd_gallery_calibrate)

    i = gal.add_parser("info", help="validate a gallery and print its manifest")
    i.add_argument("gallery", type=Path)
    i.add_argument("--sources", action="store_true", help="list every source image")
    i.set_defaults(func=cmd_gallery_info)

    s = sub.add_parser("score", help="score images against a gallery")
    s.add_argument("--gallery", type=Path, required=True)
    s.add_argument("images", type=Path, nargs="+")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--overlay-dir", type=Path, default=None, help="write heatmap overlay and mask PNGs here")
    _add_config(s)
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("eval", help="evaluate on labelled data (MVTec layout) and write a report")
    e.add_argument("--data", type=Path, required=True, help="a category folder or a folder of categories")
    e.add_argument("--category", action="append", default=None, help="only these categories (repeatable)")
    e.add_argument("--out", type=Path, required=True, help="report folder")
    _add_config(e)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="run the embedded synthetic demo (no camera, GPU or external data)")
    d.add_argument("--workdir", type=Path, default=Path("demo"))
    d.add_argument(
        "--offline", action="store_true", help="build a gallery and score test images instead of running the daemon"
    )
    d.set_defaults(func=cmd_demo)

    add_daemon_commands(sub)
    add_proxy_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inspector`` console script."""
    from inspector.backbone import BackboneError
    from inspector.config import ConfigError
    from inspector.engine import EngineError
    from inspector.evaluate import EvalError
    from inspector.gallery import GalleryError
    from inspector.gallery_build import BuildError
    from inspector.preprocess import ImageReadError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for line in exc.problems:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except (BackboneError, EngineError, EvalError, GalleryError, BuildError, ImageReadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
