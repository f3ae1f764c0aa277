"""Evaluation metrics for labelled data: image/pixel AUROC, MVTec AD PRO, F1-max and line error rates."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

DEFAULT_MAX_FPR = 0.3
DEFAULT_NUM_THRESHOLDS = 200
# 8-connectivity for ground-truth regions, as in the MVTec AD evaluation code.
EIGHT_CONNECTIVITY = np.ones((3, 3), dtype=bool)

FloatArray = npt.NDArray[np.float64]


def _check_image_level(labels: np.ndarray, scores: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate image labels/scores and return them as (bool labels, float64 scores).

    Raises:
        ValueError: on shape mismatch, labels other than 0/1, non-finite scores or a single class.
    """
    labels_arr = np.asarray(labels)
    scores_arr = np.asarray(scores, dtype=np.float64)
    if labels_arr.ndim != 1 or scores_arr.shape != labels_arr.shape:
        raise ValueError(
            f"{metric}: labels and scores must be 1-D of equal length, got labels {labels_arr.shape} "
            f"and scores {scores_arr.shape}"
        )
    if not np.isin(labels_arr, (0, 1)).all():
        raise ValueError(f"{metric}: labels must be 0 (good) or 1 (defective)")
    if not np.isfinite(scores_arr).all():
        raise ValueError(f"{metric}: scores contain NaN or infinity")
    positives = int(np.count_nonzero(labels_arr))
    if positives == 0 or positives == labels_arr.size:
        kind = "good" if positives == 0 else "defective"
        raise ValueError(
            f"{metric}: labels contain only one class ({kind} images only); need both good and defective"
        )
    return labels_arr.astype(bool), scores_arr


def _check_pixel_level(masks: np.ndarray, maps: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate [N,H,W] masks/maps; return (bool masks, float32 maps) without copying when possible.

    Raises:
        ValueError: on shape mismatch, non-finite map values or masks with a single class.
    """
    masks_arr = np.asarray(masks)
    if masks_arr.dtype != np.bool_:
        masks_arr = masks_arr != 0
    maps_arr = np.asarray(maps, dtype=np.float32)
    if maps_arr.ndim != 3 or masks_arr.shape != maps_arr.shape:
        raise ValueError(
            f"{metric}: masks and maps must both be [N,H,W] with equal shapes, got masks "
            f"{masks_arr.shape} and maps {maps_arr.shape}"
        )
    # min/max propagate NaN and expose infinities without a full-size temporary.
    if maps_arr.size == 0 or not (np.isfinite(maps_arr.min()) and np.isfinite(maps_arr.max())):
        raise ValueError(f"{metric}: maps are empty or contain NaN or infinity")
    positives = int(np.count_nonzero(masks_arr))
    if positives == 0 or positives == masks_arr.size:
        kind = "negative (good)" if positives == 0 else "positive (defective)"
        raise ValueError(
            f"{metric}: masks contain only one class (all pixels {kind}); need both defective and good pixels"
        )
    return masks_arr, maps_arr


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the image-level ROC curve.

    Args:
        labels: [N] 0 = good, 1 = defective.
        scores: [N] image anomaly scores (higher = more anomalous).

    Returns:
        AUROC in [0, 1].

    Raises:
        ValueError: if only one class is present or the inputs are malformed.
    """
    y_true, y_score = _check_image_level(labels, scores, "image_auroc")
    return float(roc_auc_score(y_true, y_score))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Area under the pixel-level ROC curve over all pixels of all images.

    Flattens with views (no copy for C-contiguous bool masks and float32 maps), so the peak
    memory is dominated by scikit-learn's sort of the scores.

    Args:
        masks: [N,H,W] ground truth, bool or 0/1.
        maps: [N,H,W] anomaly maps (converted to float32 if needed).

    Returns:
        AUROC in [0, 1].

    Raises:
        ValueError: if all pixels belong to one class or the inputs are malformed.
    """
    masks_arr, maps_arr = _check_pixel_level(masks, maps, "pixel_auroc")
    return float(roc_auc_score(masks_arr.reshape(-1), maps_arr.reshape(-1)))


def _region_and_negative_histograms(
    masks: np.ndarray, maps: np.ndarray, thresholds: np.ndarray
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Count pixels per threshold bin: per ground-truth region [C,T] and over negatives [T].

    Bin k holds pixels with thresholds[k] <= value < thresholds[k+1]. Images are processed
    one at a time to keep temporaries at the size of a single map.
    """
    num_t = thresholds.size
    negatives = np.zeros(num_t, dtype=np.int64)
    regions: list[npt.NDArray[np.int64]] = []
    for mask, amap in zip(masks, maps, strict=True):
        components, count = ndimage.label(mask, structure=EIGHT_CONNECTIVITY)
        bins = np.searchsorted(thresholds, amap, side="right") - 1
        inside = components > 0
        negatives += np.bincount(bins[~inside], minlength=num_t)
        if count:
            keys = (components[inside].astype(np.int64) - 1) * num_t + bins[inside]
            regions.append(np.bincount(keys, minlength=count * num_t).reshape(count, num_t))
    return np.concatenate(regions, axis=0), negatives


def pro_curve(
    masks: np.ndarray, maps: np.ndarray, num_thresholds: int = DEFAULT_NUM_THRESHOLDS
) -> tuple[FloatArray, FloatArray]:
    """Per-region-overlap curve: (fpr, pro) ordered by decreasing threshold.

    Thresholds are num_thresholds evenly spaced values from the map minimum to maximum; a pixel
    is predicted defective when its value is >= the threshold. The curve is closed with the
    limits (0, 0) (threshold above the maximum) and (1, 1) (threshold at or below the minimum),
    so both arrays are non-decreasing.

    Args:
        masks: [N,H,W] ground truth, bool or 0/1; regions are 8-connected components per image.
        maps: [N,H,W] anomaly maps.
        num_thresholds: number of thresholds, at least 2.

    Returns:
        (fpr, pro), each of length num_thresholds + 2.

    Raises:
        ValueError: on malformed inputs, a single pixel class, or num_thresholds < 2.
    """
    if num_thresholds < 2:
        raise ValueError(f"pro_score: num_thresholds must be >= 2, got {num_thresholds}")
    masks_arr, maps_arr = _check_pixel_level(masks, maps, "pro_score")
    lo, hi = float(maps_arr.min()), float(maps_arr.max())
    thresholds = np.linspace(lo, hi, num_thresholds).astype(maps_arr.dtype)
    region_hist, negative_hist = _region_and_negative_histograms(masks_arr, maps_arr, thresholds)
    # Pixels >= thresholds[k] = sum of bins k..T-1: reverse cumulative sums.
    covered = np.cumsum(region_hist[:, ::-1], axis=1)[:, ::-1]
    region_sizes = region_hist.sum(axis=1, keepdims=True)
    pro = (covered / region_sizes).mean(axis=0)
    false_positives = np.cumsum(negative_hist[::-1])[::-1]
    fpr = false_positives / float(negative_hist.sum())
    # Decreasing threshold order, then close the curve at (0, 0) and (1, 1).
    fpr_out = np.concatenate(([0.0], fpr[::-1], [1.0]))
    pro_out = np.concatenate(([0.0], pro[::-1], [1.0]))
    return fpr_out.astype(np.float64), pro_out.astype(np.float64)


def _area_up_to(fpr: FloatArray, pro: FloatArray, max_fpr: float) -> float:
    """Trapezoidal area under a non-decreasing curve for fpr <= max_fpr, interpolating at max_fpr."""
    keep = int(np.searchsorted(fpr, max_fpr, side="right"))
    xs, ys = fpr[:keep], pro[:keep]
    if xs[-1] < max_fpr:
        x0, y0, x1, y1 = fpr[keep - 1], pro[keep - 1], fpr[keep], pro[keep]
        y_at = y0 + (max_fpr - x0) * (y1 - y0) / (x1 - x0)
        xs = np.append(xs, max_fpr)
        ys = np.append(ys, y_at)
    return float(np.trapezoid(ys, xs))


def pro_score(
    masks: np.ndarray,
    maps: np.ndarray,
    max_fpr: float = DEFAULT_MAX_FPR,
    num_thresholds: int = DEFAULT_NUM_THRESHOLDS,
) -> float:
    """MVTec AD per-region-overlap score: normalised area under PRO-vs-FPR up to max_fpr.

    Connected components are computed once; each threshold is then handled by vectorised
    counting (np.bincount over component labels and threshold bins).

    Args:
        masks: [N,H,W] ground truth, bool or 0/1. Images with empty masks add negatives only.
        maps: [N,H,W] anomaly maps.
        max_fpr: integration limit in (0, 1]; the curve is interpolated at exactly this FPR.
        num_thresholds: thresholds evenly spanning the map range.

    Returns:
        Area / max_fpr, in [0, 1] (1.0 for a perfect map).

    Raises:
        ValueError: on malformed inputs, a single pixel class or max_fpr outside (0, 1].
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"pro_score: max_fpr must be in (0, 1], got {max_fpr}")
    fpr, pro = pro_curve(masks, maps, num_thresholds)
    return _area_up_to(fpr, pro, max_fpr) / max_fpr


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over all image-score thresholds (from sklearn precision_recall_curve).

    Args:
        labels: [N] 0 = good, 1 = defective.
        scores: [N] image anomaly scores.

    Returns:
        Maximum F1 in [0, 1].

    Raises:
        ValueError: if only one class is present or the inputs are malformed.
    """
    y_true, y_score = _check_image_level(labels, scores, "f1_max")
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    denominator = precision + recall
    f1 = np.divide(
        2.0 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(f1.max())


def rates_at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Line error rates at an image threshold (score > threshold is rejected).

    Args:
        labels: [N] 0 = good, 1 = defective.
        scores: [N] image anomaly scores.
        threshold: calibrated image threshold.

    Returns:
        (false_reject_rate, escape_rate): share of good images with score > threshold, and
        share of defective images with score <= threshold.

    Raises:
        ValueError: if only one class is present or the inputs are malformed.
    """
    y_true, y_score = _check_image_level(labels, scores, "rates_at_threshold")
    rejected = y_score > threshold
    false_reject_rate = float(np.count_nonzero(rejected & ~y_true) / np.count_nonzero(~y_true))
    escape_rate = float(np.count_nonzero(~rejected & y_true) / np.count_nonzero(y_true))
    return false_reject_rate, escape_rate


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image-level ROC curve points for plotting.

    Args:
        labels: [N] 0 = good, 1 = defective.
        scores: [N] image anomaly scores.

    Returns:
        (fpr, tpr) arrays from sklearn roc_curve, starting at (0, 0) and ending at (1, 1).

    Raises:
        ValueError: if only one class is present or the inputs are malformed.
    """
    y_true, y_score = _check_image_level(labels, scores, "roc_points")
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
