"""Offline subcommands: ``gallery build|calibrate|info``, ``score``, ``eval`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from inspector.cli.keys import add_sign_command
from inspector.cli.progress import progress_bar
from inspector.config.load import load_config
from inspector.config.root import InspectorConfig
from inspector.core.names import EXIT_OK

if TYPE_CHECKING:
    from inspector.model.engine import BackboneCache
    from inspector.model.manifest import Calibration

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it


def _config(args: argparse.Namespace) -> InspectorConfig:
    return load_config(args.config)


def cmd_gallery_build(args: argparse.Namespace) -> int:
    """Build a gallery from a folder of good images, then calibrate it leave-one-out."""
    from inspector.model.build import build_gallery, list_images
    from inspector.model.engine import BackboneCache
    from inspector.model.gallery import manifest_hash

    cfg = _config(args)
    _apply_calibration_options(cfg, args)
    images = list_images(args.images)
    backbones = BackboneCache()
    with progress_bar(len(images), "features") as bar:
        manifest = build_gallery(
            images,
            args.out,
            cfg.model,
            cfg.runtime,
            float16=args.float16,
            progress=bar.update,
            backbones=backbones,
        )
    print(f"gallery {args.out}: {manifest.image_count} images, hash {manifest_hash(manifest)[:12]}")
    if not args.no_calibrate:
        return _calibrate(args.out, cfg, None, manifest.image_count, backbones)
    return EXIT_OK


def _calibrate(
    gallery: Path,
    cfg: InspectorConfig,
    normal: list[Path] | None,
    n_gallery: int,
    backbones: BackboneCache | None,
) -> int:
    from inspector.model.build import calibrate_gallery, calibration_steps
    from inspector.model.gallery import read_manifest

    fusion = read_manifest(gallery).spade.stage_fusion
    with progress_bar(calibration_steps(len(normal) if normal else n_gallery, fusion), "calibration") as bar:
        cal = calibrate_gallery(
            gallery, cfg.runtime, cfg.calibration, normal, progress=bar.update, backbones=backbones
        )
    print_calibration("calibrated", cal)
    return EXIT_OK


def print_calibration(verb: str, cal: Calibration) -> None:
    """What a calibration set, how, and what its images can and cannot show (with a warning when too few)."""
    from inspector.model.build import calibration_warning

    how = cal.method + (f", m={cal.neighbours_left_out}" if cal.neighbours_left_out else "")
    how += (f", {cal.folds} folds" if cal.folds else "") + f", {cal.tail} tail"
    print(
        f"{verb} ({how}, {cal.n_images} normal images): image threshold {cal.image_threshold:.4f} "
        f"at target false-reject rate {cal.target_false_reject_rate:g}; pixel threshold {cal.pixel_threshold:.4f}"
    )
    if cal.normal_above_threshold is not None and cal.false_reject_upper_bound is not None:
        print(
            f"  {cal.normal_above_threshold} of {cal.n_images} normal images score above it: the false-reject rate "
            f"is at most {cal.false_reject_upper_bound:.2%} (one-sided 95% Clopper-Pearson bound these images "
            f"support); verifying {cal.target_false_reject_rate:g} needs {cal.images_needed} normal images "
            "with no failure"
        )
    warning = calibration_warning(cal)
    if warning:
        print(f"WARNING: {warning}")


def _apply_calibration_options(cfg: InspectorConfig, args: argparse.Namespace) -> None:
    """The command line's --leave-out / --tail / --target-frr over the config's [calibration]."""
    for key, value in (
        ("leave_out", getattr(args, "leave_out", None)),
        ("tail", getattr(args, "tail", None)),
        ("target_false_reject_rate", getattr(args, "target_frr", None)),
    ):
        if value is not None:
            setattr(cfg.calibration, key, value)


def cmd_gallery_calibrate(args: argparse.Namespace) -> int:
    """Calibrate (or re-calibrate) a gallery's thresholds."""
    from inspector.model.build import list_images
    from inspector.model.gallery import migrate_legacy, read_manifest

    cfg = _config(args)
    _apply_calibration_options(cfg, args)
    normal = list_images(args.normal_dir) if args.normal_dir else None
    if migrate_legacy(args.gallery):
        print(
            f"gallery {args.gallery}: rewritten as format version 2 (its old calibration dropped, redone now)"
        )
    return _calibrate(args.gallery, cfg, normal, read_manifest(args.gallery).image_count, None)


def cmd_gallery_add(args: argparse.Namespace) -> int:
    """Append new known-good images to a gallery, refuse duplicates by hash, re-calibrate."""
    from inspector.model.build import add_to_gallery, list_images
    from inspector.model.gallery import manifest_hash, read_manifest

    cfg = _config(args)
    images = list_images(args.images)
    calibration = cfg.calibration if cfg.calibration.model_fields_set else None
    before = read_manifest(args.gallery).image_count
    with progress_bar(len(images), "add") as bar:
        result = add_to_gallery(args.gallery, images, cfg.runtime, calibration, progress=bar.update)
    for image, source in result.duplicates:
        print(f"refused {image}: already in the gallery as {source} (same SHA-256)")
    cal = result.manifest.calibration
    assert cal is not None
    print(
        f"gallery {args.gallery}: {before} -> {result.manifest.image_count} images ({len(result.added)} added, "
        f"{len(result.duplicates)} duplicates refused), hash {manifest_hash(result.manifest)[:12]}"
    )
    print_calibration("re-calibrated", cal)
    return EXIT_OK


def cmd_gallery_info(args: argparse.Namespace) -> int:
    """Validate a gallery and print its manifest."""
    from inspector.model.gallery import load_gallery

    gallery = load_gallery(args.gallery)
    manifest = gallery.manifest.model_dump(mode="json")
    if not args.sources:
        manifest["sources"] = f"{len(manifest['sources'])} files"
    print(json.dumps({"gallery_sha256": gallery.sha256, **manifest}, indent=2))
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    """Score images against a calibrated gallery; one line (or JSON record) per image, in input order."""
    from inspector.quality.scoring import score_paths

    cfg = _config(args)
    return score_paths(args.gallery, args.images, cfg.runtime, args.json, args.overlay_dir, sys.stdout)


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded demo: the daemon on a synthetic line video (or, with --offline, gallery + offline scoring)."""
    if args.offline:
        from inspector.demo.offline import run_demo

        return run_demo(args.workdir, sys.stdout)
    from inspector.demo.daemon import run_daemon_demo

    return run_daemon_demo(args.workdir, sys.stdout)


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate galleries on labelled MVTec-layout data and write the report."""
    from inspector.quality.evaluate import run_eval

    cfg = _config(args)
    _apply_calibration_options(cfg, args)
    bars: list[tqdm[Any]] = []

    def progress(desc: str, total: int) -> Any:
        for old in bars:
            old.close()
        bars.append(progress_bar(total, desc))
        return bars[-1].update

    start = time.monotonic()
    try:
        metrics = run_eval(args.data, args.category, args.out, cfg, progress, with_maps=args.save_maps)
    finally:
        for bar in bars:
            bar.close()
    for name, m in metrics.items():
        print(name + "  " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()))
    print(f"report: {args.out / 'report.md'} ({time.monotonic() - start:.0f} s)")
    return EXIT_OK


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, default=None,
        help="TOML config file: [model], [runtime] and [calibration] are read (defaults when omitted)",
    )  # fmt: skip


def _add_calibration_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target-frr", type=float, default=None, help="target false-reject rate (default from config)"
    )
    p.add_argument(
        "--leave-out", choices=["leave_one_out", "leave_m_out", "k_fold"], default=None,
        help="without --normal-dir: what each gallery image is scored without (default from config)",
    )  # fmt: skip
    p.add_argument(
        "--tail", choices=["empirical", "gaussian", "pareto"], default=None,
        help="how the threshold is read from the normal scores (default from config)",
    )  # fmt: skip


def add_gallery_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``gallery build|calibrate|add|info|sign``."""
    gal = sub.add_parser("gallery", help="build, calibrate and inspect galleries").add_subparsers(
        dest="gallery_command", required=True, metavar="{build,calibrate,add,info,sign}"
    )
    b = gal.add_parser("build", help="build a gallery from known-good images (and calibrate it)")
    b.add_argument("--images", type=Path, required=True, help="folder of known-good images")
    b.add_argument("--out", type=Path, required=True, help="gallery file to write")
    b.add_argument("--float16", action="store_true", help="store features in float16 (half the size)")
    b.add_argument("--no-calibrate", action="store_true", help="skip calibration")
    _add_calibration_options(b)
    _add_config(b)
    b.set_defaults(func=cmd_gallery_build)

    c = gal.add_parser("calibrate", help="set thresholds from normal images only")
    c.add_argument(
        "--gallery", type=Path, required=True, help="gallery file to calibrate (rewritten in place)"
    )
    c.add_argument(
        "--normal-dir", type=Path, default=None, help="separate normal images (default: leave-one-out)"
    )
    _add_calibration_options(c)
    _add_config(c)
    c.set_defaults(func=cmd_gallery_calibrate)

    a = gal.add_parser("add", help="append known-good images to a gallery (duplicates refused), re-calibrate")
    a.add_argument("--gallery", type=Path, required=True, help="gallery file to grow (replaced atomically)")
    a.add_argument("--images", type=Path, required=True, help="folder of new known-good images")
    _add_config(a)
    a.set_defaults(func=cmd_gallery_add)

    i = gal.add_parser("info", help="validate a gallery and print its manifest")
    i.add_argument("gallery", type=Path, help="gallery file")
    i.add_argument("--sources", action="store_true", help="list every source image")
    i.set_defaults(func=cmd_gallery_info)
    add_sign_command(gal)


def add_offline_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``gallery``, ``score``, ``eval`` and ``demo``."""
    add_gallery_commands(sub)
    s = sub.add_parser("score", help="score images against a gallery")
    s.add_argument("--gallery", type=Path, required=True, help="calibrated gallery file")
    s.add_argument("images", type=Path, nargs="+", help="image files to score")
    s.add_argument("--json", action="store_true", help="one JSON record per image (wire field names)")
    s.add_argument("--overlay-dir", type=Path, default=None, help="write heatmap overlay and mask PNGs here")
    _add_config(s)
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("eval", help="evaluate on labelled data (MVTec layout) and write a report")
    e.add_argument("--data", type=Path, required=True, help="a category folder or a folder of categories")
    _add_calibration_options(e)
    e.add_argument("--category", action="append", default=None, help="only these categories (repeatable)")
    e.add_argument("--out", type=Path, required=True, help="report folder")
    e.add_argument(
        "--save-maps", action="store_true",
        help="also write maps_<category>.npz (anomaly maps, masks, scores; np.load with allow_pickle=False)",
    )  # fmt: skip
    _add_config(e)
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
