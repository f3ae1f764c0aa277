"""The re-teach loop's commands: ``review export``, ``gallery add --from-review`` and ``audit verify``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from inspector.cli.gallery import command_config, identity_line, print_calibration, signature_note
from inspector.cli.parts import PartsCommandError, open_database, parse_option_time
from inspector.cli.progress import progress_bar
from inspector.config.load import load_config
from inspector.core.names import EXIT_FAILURE, EXIT_OK

SubParsers = argparse._SubParsersAction  # argparse exposes no public name for it


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Walk the audit trail's hash chain; exit 1 naming the first row edited, deleted or out of place."""
    from inspector.records.audit import verify

    engine = open_database(load_config(args.config))
    try:
        with engine.connect() as conn:
            found = verify(conn)
    finally:
        engine.dispose()
    if found.first_bad_seq is None:
        print(f"audit trail intact: {found.rows} rows, every hash links to the one before")
        return EXIT_OK
    print(f"audit trail BROKEN at row {found.first_bad_seq}: {found.reason}")
    return EXIT_FAILURE


def cmd_review_export(args: argparse.Namespace) -> int:
    """Write the judged parts as an MVTec-layout folder (image-level labels), all at once or not at all."""
    from inspector.outputs.assembly import archive_root
    from inspector.outputs.export import write_export
    from inspector.records.audit import AuditEntry, append
    from inspector.records.judgments import judged

    config = load_config(args.config)
    since = parse_option_time(args.since, config, "--since")
    if args.out.exists():
        raise PartsCommandError(f"{args.out}: exists; export into a new folder (nothing was written)")
    root = archive_root(config.archive, os.environ)
    if root is None:
        raise PartsCommandError(
            "the archive is off for this config: the judged parts' frames are in the archive"
        )
    engine = open_database(config)
    try:
        with engine.connect() as conn:
            records = judged(conn, since)
        written, missing = write_export(records, root, args.out)
        with engine.begin() as conn:
            detail = {"out": str(args.out), "images": written, "missing": len(missing)}
            append(conn, [AuditEntry("review_export", args.user, str(args.out), detail=detail)])
    finally:
        engine.dispose()
    for record in missing:
        print(f"skipped {record['camera']}/{record['seq']} ({record['part_id']}): its archive record is gone")
    print(
        f"exported {written} judged parts to {args.out} (image-level labels: train/good, test/<defect type>)"
    )
    return EXIT_OK


def cmd_gallery_reteach(args: argparse.Namespace) -> int:
    """``gallery add --from-review DIR``: add the parts operators judged good, show before and after on every
    judged part, refuse when a confirmed defect would then pass; sign and audit the new version."""
    from inspector.model.build import list_images, reteach
    from inspector.model.gallery import read_gallery_hash

    cfg = command_config(args)
    review = args.from_review
    goods = list_images(review / "train" / "good")
    defects = sorted(p for d in sorted((review / "test").glob("*")) if d.is_dir() for p in list_images(d))
    before_hash = read_gallery_hash(args.gallery)
    with progress_bar(len(goods), "re-teach") as bar:
        result = reteach(args.gallery, goods, defects, cfg.runtime, args.force, bar.update)
    fixed, caught = len(result.fixed), sum(1 for _, a in result.defects.values() if a != "PASS")
    print(f"judged good (false rejects): {len(goods)}; passing before {_passing(result.goods, 0)}, after "
          f"{_passing(result.goods, 1)}: {fixed} fixed")  # fmt: skip
    print(f"confirmed defects: {len(defects)}; caught (FAIL or REVIEW) before "
          f"{len(defects) - _passing(result.defects, 0)}, after {caught}")  # fmt: skip
    for image in result.newly_passed:
        print(f"WARNING (--force): {image} is a confirmed defect the new gallery passes")
    assert result.grown is not None
    print(identity_line(args.gallery, "re-taught", f"{result.grown.manifest.image_count} images"))
    _sign_and_audit(args, before_hash, {"added": len(result.grown.added), "fixed": fixed, "caught": caught})
    return EXIT_OK


def _passing(verdicts: dict[Path, tuple[str, str]], when: int) -> int:
    return sum(1 for pair in verdicts.values() if pair[when] == "PASS")


def _sign_and_audit(args: argparse.Namespace, before_hash: str, detail: dict[str, Any]) -> None:
    """Sign the new version when a key is given; record the change in the audit trail when the config has a
    parts database."""
    from inspector.model.gallery import read_gallery_hash
    from inspector.records.audit import AuditEntry, append
    from inspector.records.store import database_url, open_engine

    after_hash = read_gallery_hash(args.gallery)
    if args.key is not None:
        from inspector.model.signing import sign_gallery

        sig, signer = sign_gallery(args.gallery, after_hash, args.key)
        print(f"signed by {signer} -> {sig}")
    else:
        signature_note(args.gallery)
    cfg = command_config(args)
    url = database_url(cfg.parts, os.environ)
    if url is None:
        return
    engine = open_engine(cfg.parts, url)
    try:
        with engine.begin() as conn:
            entry = {"from": before_hash, "to": after_hash, **detail}
            append(conn, [AuditEntry("gallery_replaced", args.user, str(args.gallery), detail=entry)])
    finally:
        engine.dispose()
    print(f"audit: gallery_replaced by {args.user} recorded in {url.split('://')[0]} parts database")


def labelled_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """(good, defective) images of a labelled folder: ``good/`` and one subfolder per defect type, directly or
    under ``test/`` (an MVTec category)."""
    from inspector.model.build import list_images

    root = folder / "test" if (folder / "test").is_dir() else folder
    if not (root / "good").is_dir():
        raise PartsCommandError(f"{folder}: no good/ (or test/good/) folder of labelled good images")
    defects = [p for d in sorted(root.iterdir()) if d.is_dir() and d.name != "good" for p in list_images(d)]
    return list_images(root / "good"), defects


def cmd_gallery_tune(args: argparse.Namespace) -> int:
    """Set the thresholds from labelled good and defective parts; say what the labelled defects do."""
    from inspector.model.calibration import clopper_pearson
    from inspector.model.gallery import read_gallery_hash
    from inspector.model.tune import tune_gallery

    cfg = command_config(args)
    goods, defects = labelled_folder(args.labelled)
    before_hash = read_gallery_hash(args.gallery)
    with progress_bar(len(goods), "tune") as bar:
        tuned = tune_gallery(args.gallery, goods, defects, cfg.runtime, cfg.calibration, bar.update)
    cal = tuned.calibration
    print(
        identity_line(args.gallery, "tuned", f"{len(goods)} labelled good, {len(defects)} defective images")
    )
    print_calibration("tuned", cal)
    lo, hi = tuned.escape_bounds()
    print(f"  labelled defects not FAILed: {len(tuned.escaped)} of {tuned.n_defects} (95% CI {lo:.1%}-{hi:.1%}); "
          f"passed: {len(tuned.passed)}")  # fmt: skip
    caught = tuned.n_defects - len(tuned.passed)
    clo, chi = clopper_pearson(caught, tuned.n_defects)
    print(f"  caught by FAIL or REVIEW: {caught} of {tuned.n_defects} (95% CI {clo:.1%}-{chi:.1%})")
    for image in tuned.passed:
        print(f"  passes: {image}")
    _sign_and_audit(args, before_hash, {"tuned_on": str(args.labelled), "image_threshold": cal.image_threshold,
                                        "review_threshold": cal.review_threshold})  # fmt: skip
    return EXIT_OK


def add_review_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``review export`` and ``audit verify``."""
    review = sub.add_parser("review", help="what operators judged: export it for a re-teach")
    rcmds = review.add_subparsers(dest="review_command", required=True, metavar="{export}")
    e = rcmds.add_parser("export", help="judged REVIEW/FAIL parts as a labelled folder (MVTec layout)")
    e.add_argument(
        "--config", type=Path, required=True, help="the daemon's config ([parts], [archive] are read)"
    )
    e.add_argument("--out", type=Path, required=True, help="a new folder to write")
    e.add_argument("--since", default=None, help="only judgments from this time on (ISO 8601)")
    e.add_argument("--user", default=os.environ.get("USER", "engineer"), help="who exports (the audit trail)")
    e.set_defaults(func=cmd_review_export)
    audit = sub.add_parser("audit", help="the audit trail of judgments, logins, gallery and product changes")
    acmds = audit.add_subparsers(dest="audit_command", required=True, metavar="{verify}")
    v = acmds.add_parser("verify", help="check the hash chain; exit 1 naming the first row edited or deleted")
    v.add_argument("--config", type=Path, required=True, help="the daemon's config ([parts] is read)")
    v.set_defaults(func=cmd_audit_verify)
