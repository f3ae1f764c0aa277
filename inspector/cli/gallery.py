"""Gallery subcommands: ``gallery build|calibrate|add|info`` (``sign`` lives with the keys)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inspector.cli.keys import add_sign_command
from inspector.cli.progress import progress_bar
from inspector.config.load import load_config
from inspector.config.root import InspectorConfig
from inspector.core.errors import InspectorError
from inspector.core.names import EXIT_OK

if TYPE_CHECKING:
    from inspector.model.manifest import Calibration

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it
SCORE_LISTS = ("normal_scores", "normal_knn", "normal_map_max")


class GalleryCommandError(InspectorError):
    """A gallery command refused before it started (the message names the file and what to do)."""


def command_config(args: argparse.Namespace) -> InspectorConfig:
    """The --config file's settings with the command line's calibration options over them."""
    cfg = load_config(args.config)
    for key, value in (
        ("leave_out", getattr(args, "leave_out", None)),
        ("tail", getattr(args, "tail", None)),
        ("target_false_reject_rate", getattr(args, "target_frr", None)),
        ("target_review_rate", getattr(args, "target_review_rate", None)),
    ):
        if value is not None:
            setattr(cfg.calibration, key, value)
    return cfg


def image_folder(folder: Path) -> list[Path]:
    """The images directly in a folder, with a note on stdout naming the subfolders that are not used."""
    from inspector.model.build import list_images, subfolders_with_images

    images = list_images(folder)
    skipped = subfolders_with_images(folder)
    if skipped:
        listed = ", ".join(f"{p} ({n})" for p, n in skipped.items())
        print(f"note: {len(images)} images in {folder} used; subfolders are not read: {listed}")
    return images


def step_bars() -> tuple[Any, list[Any]]:
    """A ``progress(step, total)`` factory for multi-step library calls, and the bars it opened."""
    bars: list[Any] = []

    def progress(desc: str, total: int) -> Any:
        for old in bars:
            old.close()
        bars.append(progress_bar(total, desc))
        return bars[-1].update

    return progress, bars


def identity_line(path: Path, verb: str, details: str) -> str:
    """``gallery P: <verb> (<details>), gallery_sha256 <64 hex>``: the hash the bus and OPC UA carry."""
    from inspector.model.gallery import read_gallery_hash

    return f"gallery {path}: {verb} ({details}), gallery_sha256 {read_gallery_hash(path)}"


def signature_note(path: Path) -> None:
    """Say so when a detached signature beside the gallery now signs its previous version."""
    from inspector.model.signing import signature_path

    sig = signature_path(path)
    if sig.exists():
        print(
            f"note: {sig} signs the previous version; re-sign with `inspector gallery sign {path} --key ...`"
        )


def cmd_gallery_build(args: argparse.Namespace) -> int:
    """Build a gallery from a folder of good images and calibrate it leave-out; all or nothing."""
    from inspector.model.build import build_and_calibrate, build_gallery

    cfg = command_config(args)
    images = image_folder(args.images)
    if args.no_calibrate:
        if args.out.exists():
            raise GalleryCommandError(
                f"{args.out}: exists; --no-calibrate would replace it with a gallery that cannot serve "
                "(write it to a new file)"
            )
        with progress_bar(len(images), "features") as bar:
            build_gallery(images, args.out, cfg.model, cfg.runtime, args.float16, bar.update)
        print(identity_line(args.out, "built, not calibrated", f"{len(images)} images"))
        return EXIT_OK
    progress, bars = step_bars()
    try:
        _, cal = build_and_calibrate(
            images, args.out, cfg.model, cfg.runtime, cfg.calibration, args.float16, progress
        )
    finally:
        for bar in bars:
            bar.close()
    print(identity_line(args.out, "built", f"{len(images)} images"))
    print_calibration("calibrated", cal)
    signature_note(args.out)
    return EXIT_OK


def print_calibration(verb: str, cal: Calibration) -> None:
    """What a calibration set, how, and what its images can and cannot show (with a warning when too few)."""
    from inspector.model.thresholds import calibration_warning

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
    if cal.review_threshold is not None:
        print(
            f"  review threshold {cal.review_threshold:.4f} at target review rate {cal.target_review_rate:g}: "
            "a score above it and not above the image threshold is REVIEW (a person judges the part)"
        )
    warning = calibration_warning(cal)
    if warning:
        print(f"WARNING: {warning}")


def cmd_gallery_calibrate(args: argparse.Namespace) -> int:
    """Calibrate (or re-calibrate) a gallery's thresholds; refused on gallery images or a degenerate result."""
    from inspector.model.gallery import is_legacy, manifest_document
    from inspector.model.thresholds import calibrate_gallery, calibration_steps

    cfg = command_config(args)
    normal = image_folder(args.normal_dir) if args.normal_dir else None
    legacy = is_legacy(args.gallery)
    doc = manifest_document(args.gallery)  # read as found (a version 1 file is migrated by the calibration)
    try:
        count, fusion = int(doc["image_count"]), str(doc["spade"].get("stage_fusion", "mean"))
    except (KeyError, TypeError, ValueError, AttributeError):
        count, fusion = 0, "mean"  # calibrate_gallery refuses the file, naming what is wrong
    with progress_bar(calibration_steps(len(normal) if normal else count, fusion), "calibration") as bar:
        cal = calibrate_gallery(
            args.gallery, cfg.runtime, cfg.calibration, normal, bar.update, allow_overlap=args.allow_overlap
        )
    if legacy:
        print(
            f"gallery {args.gallery}: rewritten as format version 2 (its old calibration dropped, redone now)"
        )
    print(identity_line(args.gallery, "calibrated", f"{count} images"))
    print_calibration("calibrated", cal)
    signature_note(args.gallery)
    return EXIT_OK


def cmd_gallery_add(args: argparse.Namespace) -> int:
    """Append new known-good images to a gallery, refuse duplicates by hash, re-calibrate as it was."""
    from inspector.model.build import add_to_gallery
    from inspector.model.gallery import read_manifest

    if args.from_review is not None:
        from inspector.cli.review import cmd_gallery_reteach

        return cmd_gallery_reteach(args)
    cfg = command_config(args)
    images = image_folder(args.images)
    normal = image_folder(args.normal_dir) if args.normal_dir else None
    calibration = cfg.calibration if cfg.calibration.model_fields_set else None
    before = read_manifest(args.gallery).image_count
    with progress_bar(len(images), "add") as bar:
        result = add_to_gallery(
            args.gallery, images, cfg.runtime, calibration, progress=bar.update, normal_images=normal
        )
    for image, source in result.duplicates:
        print(f"refused {image}: already in the gallery as {source} (same SHA-256)")
    details = (
        f"{before} -> {result.manifest.image_count} images, {len(result.added)} added, "
        f"{len(result.duplicates)} duplicates refused"
    )
    print(identity_line(args.gallery, "grown", details))
    cal = result.manifest.calibration
    assert cal is not None
    if result.recalibrated:
        print_calibration("re-calibrated", cal)
    else:
        print(
            f"calibration kept: it was set on a hold-out folder ({cal.n_images} images, {cal.created_at}) that "
            "this command cannot re-run without it; the old thresholds stay until you run "
            f"`inspector gallery calibrate --gallery {args.gallery} --normal-dir DIR` (or add with --normal-dir)"
        )
    signature_note(args.gallery)
    return EXIT_OK


def _tune(args: argparse.Namespace) -> int:
    from inspector.cli.review import cmd_gallery_tune

    return cmd_gallery_tune(args)


def summarised(calibration: dict[str, Any], full: bool) -> dict[str, Any]:
    """The calibration record with each per-image score list replaced by n / min / median / max."""
    if full:
        return calibration
    out = dict(calibration)
    for key in SCORE_LISTS:
        values = calibration.get(key)
        if isinstance(values, list) and values:
            out[key] = {"n": len(values), "min": min(values), "median": statistics.median(values),
                        "max": max(values)}  # fmt: skip
    return out


def cmd_gallery_info(args: argparse.Namespace) -> int:
    """Validate a gallery and print its manifest (score lists summarised unless --scores) and what of a
    frame of its images' size is inspected."""
    from inspector.model.gallery import load_gallery
    from inspector.model.geometry import typical_geometry

    gallery = load_gallery(args.gallery)
    manifest = gallery.manifest.model_dump(mode="json")
    manifest["inspected"] = (
        typical_geometry(gallery.manifest) or "not recorded (built before image sizes were)"
    )
    if not args.sources:
        manifest["sources"] = f"{len(manifest['sources'])} files (--sources lists them)"
    if manifest.get("calibration"):
        manifest["calibration"] = summarised(manifest["calibration"], args.scores)
    print(json.dumps({"gallery_sha256": gallery.sha256, **manifest}, indent=2))
    return EXIT_OK


def add_config_option(p: argparse.ArgumentParser) -> None:
    """--config FILE."""
    p.add_argument(
        "--config", type=Path, default=None,
        help="TOML config file: [model], [runtime] and [calibration] are read (defaults when omitted)",
    )  # fmt: skip


def add_calibration_options(p: argparse.ArgumentParser, leave_out_help: str) -> None:
    """--target-frr, --leave-out (with this command's help text) and --tail."""
    p.add_argument(
        "--target-frr", type=float, default=None, help="target false-reject rate (default from config)"
    )
    p.add_argument(
        "--leave-out", choices=["leave_one_out", "leave_m_out", "k_fold"], default=None, help=leave_out_help
    )
    p.add_argument(
        "--target-review-rate", type=float, default=None,
        help="share of normal parts sent to REVIEW by a second threshold below the image threshold "
        "(default from config: none)",
    )  # fmt: skip
    p.add_argument(
        "--tail", choices=["empirical", "gaussian", "pareto"], default=None,
        help="how the threshold is read from the normal scores (default from config)",
    )  # fmt: skip


LEAVE_OUT_HELP = "what each gallery image is scored without while calibrating (default from config)"


def add_gallery_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``gallery build|calibrate|add|info|sign``."""
    gal = sub.add_parser("gallery", help="build, calibrate and inspect galleries").add_subparsers(
        dest="gallery_command", required=True, metavar="{build,calibrate,add,tune,info,sign}"
    )
    b = gal.add_parser(
        "build", help="build a gallery from known-good images and calibrate it (all or nothing)"
    )
    b.add_argument("--images", type=Path, required=True, help="folder of known-good images (not subfolders)")
    b.add_argument("--out", type=Path, required=True, help="gallery file to write (replaced only on success)")
    b.add_argument("--float16", action="store_true", help="store features in float16 (half the size)")
    b.add_argument("--no-calibrate", action="store_true", help="skip calibration (new files only)")
    add_calibration_options(b, LEAVE_OUT_HELP)
    add_config_option(b)
    b.set_defaults(func=cmd_gallery_build)

    c = gal.add_parser("calibrate", help="set thresholds from normal images only (replaced only on success)")
    c.add_argument("--gallery", type=Path, required=True, help="gallery file to calibrate")
    c.add_argument(
        "--normal-dir", type=Path, default=None,
        help="normal images the gallery has not seen (default: leave-out on the gallery's own images)",
    )  # fmt: skip
    c.add_argument(
        "--allow-overlap", action="store_true",
        help="calibrate even when some --normal-dir images are gallery images (refused by default)",
    )  # fmt: skip
    add_calibration_options(c, "without --normal-dir: " + LEAVE_OUT_HELP)
    add_config_option(c)
    c.set_defaults(func=cmd_gallery_calibrate)

    a = gal.add_parser("add", help="append known-good images (duplicates refused), re-calibrate as before")
    a.add_argument(
        "--gallery", type=Path, required=True, help="gallery file to grow (replaced only on success)"
    )
    source = a.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of new known-good images")
    source.add_argument(
        "--from-review", type=Path,
        help="a folder `inspector review export` wrote for this product: its train/good parts are added, and "
        "the command refuses if a confirmed defect in test/ would then pass",
    )  # fmt: skip
    a.add_argument(
        "--force", action="store_true", help="with --from-review: replace even if defects would pass"
    )
    a.add_argument(
        "--key", type=Path, default=None, help="with --from-review: sign the new version with this key"
    )
    a.add_argument(
        "--user", default=os.environ.get("USER", "engineer"), help="who re-teaches (the audit trail)"
    )
    a.add_argument(
        "--normal-dir", type=Path, default=None,
        help="hold-out images to redo a hold-out calibration with (without it, its thresholds are kept)",
    )  # fmt: skip
    add_config_option(a)
    a.set_defaults(func=cmd_gallery_add)

    t = gal.add_parser("tune", help="set the thresholds from labelled good and defective parts")
    t.add_argument("--gallery", type=Path, required=True, help="gallery file (replaced only on success)")
    t.add_argument(
        "--labelled", type=Path, required=True,
        help="good/ and one folder per defect type (or an MVTec category's test/): parts the gallery has not seen",
    )  # fmt: skip
    t.add_argument("--key", type=Path, default=None, help="sign the new version with this key")
    t.add_argument("--user", default=os.environ.get("USER", "engineer"), help="who tunes (the audit trail)")
    add_calibration_options(t, "unused by tune (thresholds come from the labelled good images)")
    add_config_option(t)
    t.set_defaults(func=_tune)

    i = gal.add_parser("info", help="validate a gallery and print its manifest")
    i.add_argument("gallery", type=Path, help="gallery file")
    i.add_argument("--sources", action="store_true", help="list every source image")
    i.add_argument("--scores", action="store_true", help="print every normal score, not their summary")
    i.set_defaults(func=cmd_gallery_info)
    add_sign_command(gal)
