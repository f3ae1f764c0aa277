"""Evaluation report: metrics.json, report.md with published figures, ROC plots and error montages."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.model.manifest import Calibration
from inspector.quality.metrics import (
    f1_max,
    image_auroc,
    pixel_auroc,
    pro_score,
    rates_at_threshold,
    roc_points,
)
from inspector.quality.montage import render_montage
from inspector.quality.operating import (
    OperatingPoint,
    calibration_lines,
    operating_lines,
    operating_point,
    review_point,
    verdict_line,
)

METRIC_KEYS = (
    "image_auroc",
    "pixel_auroc",
    "pro",
    "f1_max",
    "false_reject_rate",
    "escape_rate",
    "ms_per_image",
)
METRIC_LABELS = {
    "image_auroc": "Image AUROC (%)",
    "pixel_auroc": "Pixel AUROC (%)",
    "pro": "PRO, FPR <= 0.3 (%)",
    "f1_max": "Image F1-max (%)",
    "false_reject_rate": "False-reject rate at threshold (%)",
    "escape_rate": "Escape rate at threshold (%)",
    "ms_per_image": "Latency (ms / image)",
}
PERCENT_KEYS = frozenset(METRIC_KEYS) - {"ms_per_image"}
CATEGORY_PREFIX = "mvtec_"
CATEGORY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class PublishedFigures:
    """Figures (in %) published by one source for one MVTec AD category."""

    source: str
    figures: tuple[tuple[str, float], ...]

    def get(self, key: str) -> float | None:
        """Return the published value for a metric key, or None when not published."""
        return dict(self.figures).get(key)


# Published results for comparison, keyed by MVTec AD category name (without the "mvtec_" prefix).
PUBLISHED: dict[str, tuple[PublishedFigures, ...]] = {
    "bottle": (
        PublishedFigures("SPADE paper (Wide-ResNet50x2)", (("pixel_auroc", 98.4), ("pro", 95.5))),
        PublishedFigures("PatchCore paper", (("image_auroc", 100.0), ("pixel_auroc", 98.5))),
        PublishedFigures(
            "anomalib PatchCore", (("image_auroc", 100.0), ("pixel_auroc", 97.96), ("pro", 92.07))
        ),
    ),
}

PIXEL_ROC_SAMPLES_PER_CLASS = 100_000
PLOT_SAMPLE_SEED = 0
ROC_FIGSIZE_IN = (11.0, 4.8)
ROC_DPI = 100


@dataclass(frozen=True)
class CategoryEval:
    """Everything needed to evaluate one category; arrays are in model-input (crop) space."""

    name: str
    image_paths: list[str]
    labels: np.ndarray  # [N] 0 good / 1 defective
    defect_types: list[str]  # per image, "good" for good ones
    scores: np.ndarray  # [N] image scores
    threshold: float  # calibrated image threshold
    maps: np.ndarray  # [N,H,W] float32 anomaly maps
    masks: np.ndarray  # [N,H,W] bool ground truth
    images: np.ndarray  # [N,H,W,3] uint8 BGR crops
    ms_per_image: float
    pixel_threshold: float | None = None  # calibrated pixel threshold (marked on the montage's colour bar)
    calibration: Calibration | None = None  # how the threshold was set (its target gives the operating point)
    gallery_sha256: str = ""  # the gallery evaluated

    def __post_init__(self) -> None:
        """Check that every field agrees on N and on the crop size.

        Raises:
            ValueError: naming the category and the inconsistent field.
        """
        where = f"CategoryEval {self.name!r}"
        if not CATEGORY_NAME_PATTERN.match(self.name):
            raise ValueError(f"{where}: name must match {CATEGORY_NAME_PATTERN.pattern} (used in file names)")
        n = len(self.image_paths)
        sizes = {
            "labels": np.shape(self.labels)[:1],
            "defect_types": (len(self.defect_types),),
            "scores": np.shape(self.scores)[:1],
            "maps": np.shape(self.maps)[:1],
            "masks": np.shape(self.masks)[:1],
            "images": np.shape(self.images)[:1],
        }
        for field_name, size in sizes.items():
            if size != (n,):
                raise ValueError(f"{where}: {field_name} has {size} entries, image_paths has {n}")
        if np.ndim(self.maps) != 3 or np.shape(self.masks) != np.shape(self.maps):
            raise ValueError(
                f"{where}: maps and masks must be [N,H,W] of equal shape, got "
                f"{np.shape(self.maps)} and {np.shape(self.masks)}"
            )
        if np.shape(self.images) != (*np.shape(self.maps), 3) or self.images.dtype != np.uint8:
            raise ValueError(
                f"{where}: images must be uint8 [N,H,W,3] matching maps {np.shape(self.maps)}, got "
                f"{self.images.dtype} {np.shape(self.images)}"
            )


def compute_metrics(ev: CategoryEval) -> dict[str, float]:
    """Compute all report metrics for one category.

    Args:
        ev: the category's labelled results.

    Returns:
        Dict with keys METRIC_KEYS; rates and AUROCs as fractions in [0, 1].

    Raises:
        ValueError: if the category lacks good or defective images, or defective pixels.
    """
    frr, escape = rates_at_threshold(ev.labels, ev.scores, ev.threshold)
    return {
        "image_auroc": image_auroc(ev.labels, ev.scores),
        "pixel_auroc": pixel_auroc(ev.masks, ev.maps),
        "pro": pro_score(ev.masks, ev.maps),
        "f1_max": f1_max(ev.labels, ev.scores),
        "false_reject_rate": frr,
        "escape_rate": escape,
        "ms_per_image": float(ev.ms_per_image),
    }


def _sample_pixels(masks: np.ndarray, maps: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-stratified pixel sample for plotting (the ROC curve does not depend on class ratio)."""
    flat_masks = np.asarray(masks, dtype=bool).reshape(-1)
    flat_maps = np.asarray(maps, dtype=np.float32).reshape(-1)
    total = flat_masks.size
    if total <= 2 * per_class:
        return flat_masks, flat_maps
    rng = np.random.default_rng(PLOT_SAMPLE_SEED)
    positives = int(np.count_nonzero(flat_masks))
    minority_label = positives <= total - positives
    minority = np.flatnonzero(flat_masks == minority_label)
    minority = rng.choice(minority, size=min(per_class, minority.size), replace=False)
    draws = rng.integers(0, total, size=2 * per_class)  # majority class is >= half: ~per_class hits
    majority = draws[flat_masks[draws] != minority_label][:per_class]
    chosen = np.concatenate([minority, majority])
    return flat_masks[chosen], flat_maps[chosen]


def _write_roc_png(path: Path, ev: CategoryEval, metrics: dict[str, float]) -> None:
    """Image-level and (sampled) pixel-level ROC curves side by side."""
    from matplotlib.figure import (
        Figure,  # imported here: scoring and the daemon use this module without plots
    )

    fig = Figure(figsize=ROC_FIGSIZE_IN, dpi=ROC_DPI)
    ax_img, ax_pix = fig.subplots(1, 2)
    fpr, tpr = roc_points(ev.labels, ev.scores)
    ax_img.plot(fpr, tpr, lw=2, label=f"image AUROC = {metrics['image_auroc']:.4f}")
    sample_labels, sample_scores = _sample_pixels(ev.masks, ev.maps, PIXEL_ROC_SAMPLES_PER_CLASS)
    pfpr, ptpr = roc_points(sample_labels.astype(np.int64), sample_scores)
    ax_pix.plot(pfpr, ptpr, lw=2, color="tab:orange", label=f"pixel AUROC = {metrics['pixel_auroc']:.4f}")
    ax_img.set_title(f"{ev.name}: image-level ROC (N={len(ev.labels)})")
    ax_pix.set_title(f"{ev.name}: pixel-level ROC (curve from {sample_labels.size:,} px)")
    for ax in (ax_img, ax_pix):
        ax.plot([0.0, 1.0], [0.0, 1.0], ls="--", color="grey", lw=1, label="chance")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def _published_for(name: str) -> tuple[PublishedFigures, ...]:
    """Published figures for a category name, accepting an optional "mvtec_" prefix."""
    key = name.removeprefix(CATEGORY_PREFIX)
    return PUBLISHED.get(key, ())


def _format_value(key: str, value: float | None) -> str:
    """Format a metric for the table: percentages with 2 decimals, latency with 1."""
    if value is None:
        return "–"
    return f"{value:.1f}" if key == "ms_per_image" else f"{value:.2f}"


def category_operating_point(ev: CategoryEval) -> OperatingPoint | None:
    """The calibrated threshold's operating point against its target (None without a calibration record)."""
    if ev.calibration is None:
        return None
    return operating_point(ev.labels, ev.scores, ev.threshold, ev.calibration.target_false_reject_rate)


def category_verdict(ev: CategoryEval) -> tuple[bool, str]:
    """Whether the category's gallery meets its false-reject target, and the sentence(s) that say so (the
    review band's on a second line when the gallery has one)."""
    op = category_operating_point(ev)
    if op is None:
        return True, f"{ev.name}: gallery not calibrated, no target to check"
    review = review_point(ev.labels, ev.scores, ev.calibration) if ev.calibration else None
    return op.meets_target, verdict_line(ev.name, op) + (f"\n{review.line(ev.name)}" if review else "")


def operating_metrics(ev: CategoryEval) -> dict[str, float]:
    """The operating point against the calibration's target (empty without a calibration record)."""
    op = category_operating_point(ev)
    if op is None or ev.calibration is None:
        return {}
    review = review_point(ev.labels, ev.scores, ev.calibration)
    return op.metrics() | {"meets_target": float(op.meets_target)} | (review.metrics() if review else {})


def _category_markdown(ev: CategoryEval, metrics: dict[str, float]) -> list[str]:
    """Markdown section for one category: metrics table and figure links."""
    published = _published_for(ev.name)
    n_bad = int(np.count_nonzero(ev.labels))
    lines = [
        f"## {ev.name}",
        "",
        (
            f"{len(ev.labels)} images ({len(ev.labels) - n_bad} good, {n_bad} defective), "
            f"image threshold {ev.threshold:.6g}."
        ),
        "",
        "| " + " | ".join(["Metric", "Ours", *(p.source for p in published)]) + " |",
        "|" + "---|" + "---:|" * (1 + len(published)),
    ]
    for key in METRIC_KEYS:
        ours = metrics[key] * 100.0 if key in PERCENT_KEYS else metrics[key]
        cells = [
            METRIC_LABELS[key],
            _format_value(key, ours),
            *(_format_value(key, p.get(key)) for p in published),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    op = category_operating_point(ev)
    if op is not None:
        lines += [*calibration_lines(ev.calibration), "", *operating_lines(op)]
    lines += [
        f"ROC curves: [roc_{ev.name}.png](roc_{ev.name}.png)",
        "",
        f"![ROC {ev.name}](roc_{ev.name}.png)",
        "",
        f"Worst false rejects, and the worst escapes of each defect type: [montage_{ev.name}.png](montage_{ev.name}.png)",
        "",
        f"![Montage {ev.name}](montage_{ev.name}.png)",
        "",
    ]
    return lines


def _report_markdown(
    evals: list[CategoryEval], metrics: dict[str, dict[str, float]], settings: dict[str, object]
) -> str:
    """Whole report.md text."""
    lines = ["# Evaluation report", ""]
    lines += [f"**{line}**  " for ev in evals for line in category_verdict(ev)[1].splitlines()] + [""]
    for ev in evals:
        lines += _category_markdown(ev, metrics[ev.name])
    lines += ["## Settings", "", "| Setting | Value |", "|---|---|"]
    for key, value in settings.items():
        lines.append(f"| {key} | {str(value).replace('|', '/')} |")
    lines.append("")
    return "\n".join(lines)


def write_report(
    out_dir: Path, evals: list[CategoryEval], settings: dict[str, object]
) -> dict[str, dict[str, float]]:
    """Write metrics.json, report.md, roc_<category>.png and montage_<category>.png.

    Args:
        out_dir: output folder (created if missing).
        evals: one entry per category; names must be unique.
        settings: settings used for the run, listed in report.md.

    Returns:
        The metrics written to metrics.json: {category: {metric: value}}.

    Raises:
        ValueError: on duplicate category names, an empty list, or data a metric cannot use.
        OSError: if a file cannot be written.
    """
    if not evals:
        raise ValueError("write_report: evals is empty; nothing to report")
    names = [ev.name for ev in evals]
    if len(set(names)) != len(names):
        raise ValueError(f"write_report: duplicate category names in evals: {names}")
    out_dir.mkdir(parents=True, exist_ok=True)
    all_metrics: dict[str, dict[str, float]] = {}
    for ev in evals:
        metrics = compute_metrics(ev)
        all_metrics[ev.name] = metrics | operating_metrics(ev)
        _write_roc_png(out_dir / f"roc_{ev.name}.png", ev, metrics)
        montage_path = out_dir / f"montage_{ev.name}.png"
        if not cv2.imwrite(str(montage_path), render_montage(ev)):
            raise OSError(f"write_report: cv2.imwrite failed for {montage_path}")
    (out_dir / "metrics.json").write_text(json.dumps(all_metrics, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(_report_markdown(evals, all_metrics, settings), encoding="utf-8")
    return all_metrics
