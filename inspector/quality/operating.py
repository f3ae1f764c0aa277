"""The operating point of a calibrated threshold on labelled tests: against the target, with binomial intervals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inspector.model import calibration as calib
from inspector.model.manifest import Calibration


@dataclass(frozen=True)
class OperatingPoint:
    """What a threshold did on test/good and on the defective tests, and what the target asked."""

    target: float
    threshold: float
    n_good: int
    false_rejects: int
    n_defect: int
    escapes: int
    interval: tuple[float, float]  # two-sided 95% Clopper-Pearson interval of the realised false-reject rate
    target_counts: tuple[
        int, int
    ]  # false rejects a true rate of `target` gives in n_good images (central 95%)
    test_threshold: float  # the threshold that meets the target on these good test images
    test_threshold_escapes: int

    @property
    def false_reject_rate(self) -> float:
        """Realised false-reject rate on test/good."""
        return self.false_rejects / max(1, self.n_good)

    @property
    def meets_target(self) -> bool:
        """No more false rejects than a true rate at the target gives for this many good images (95%)."""
        return self.false_rejects <= self.target_counts[1]

    @property
    def inside_target(self) -> bool:
        """The realised false rejects are within what the target rate gives for this many good images."""
        return self.target_counts[0] <= self.false_rejects <= self.target_counts[1]

    def metrics(self) -> dict[str, float]:
        """The numbers for metrics.json."""
        return {
            "target_false_reject_rate": self.target,
            "false_reject_ci_low": self.interval[0],
            "false_reject_ci_high": self.interval[1],
            "target_false_rejects_low": float(self.target_counts[0]),
            "target_false_rejects_high": float(self.target_counts[1]),
            "inside_target": float(self.inside_target),
            "threshold_meeting_target_on_test": self.test_threshold,
            "escape_rate_at_threshold_meeting_target": self.test_threshold_escapes / max(1, self.n_defect),
        }


def operating_point(
    labels: np.ndarray, scores: np.ndarray, threshold: float, target: float
) -> OperatingPoint:
    """The threshold's operating point: false rejects (good above it), escapes (defective at or below it).

    Raises:
        ValueError: no good test image.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    good, bad = scores[labels == 0], scores[labels == 1]
    if good.size == 0:
        raise ValueError("operating point: no good test image")
    rejects = int(np.count_nonzero(good > threshold))
    oracle = calib.threshold_at_rate(good, target)
    return OperatingPoint(
        target=target,
        threshold=threshold,
        n_good=int(good.size),
        false_rejects=rejects,
        n_defect=int(bad.size),
        escapes=int(np.count_nonzero(bad <= threshold)),
        interval=calib.clopper_pearson(rejects, int(good.size)),
        target_counts=calib.target_interval(int(good.size), target),
        test_threshold=oracle,
        test_threshold_escapes=int(np.count_nonzero(bad <= oracle)),
    )


@dataclass(frozen=True)
class ReviewPoint:
    """What a review band did: good parts sent to REVIEW, defects caught by FAIL or REVIEW, and escapes."""

    review_threshold: float
    target_review_rate: float
    n_good: int
    good_reviewed: int
    good_failed: int
    n_defect: int
    defects_caught: int  # FAIL or REVIEW
    defects_escaped: int  # PASS
    review_interval: tuple[float, float]
    caught_interval: tuple[float, float]

    def metrics(self) -> dict[str, float]:
        """The numbers for metrics.json."""
        n_good, n_defect = max(1, self.n_good), max(1, self.n_defect)
        return {
            "review_threshold": self.review_threshold,
            "target_review_rate": self.target_review_rate,
            "review_rate": self.good_reviewed / n_good,
            "review_rate_ci_low": self.review_interval[0],
            "review_rate_ci_high": self.review_interval[1],
            "caught_rate": self.defects_caught / n_defect,
            "caught_rate_ci_low": self.caught_interval[0],
            "caught_rate_ci_high": self.caught_interval[1],
            "escape_rate_with_review": self.defects_escaped / n_defect,
        }

    def line(self, name: str) -> str:
        """The sentence of the three-way operating point."""
        lo, hi = self.review_interval
        clo, chi = self.caught_interval
        n_good, n_defect = max(1, self.n_good), max(1, self.n_defect)
        return (
            f"{name}: review band (target {self.target_review_rate:.1%}): {self.good_reviewed} of {self.n_good} "
            f"good parts to REVIEW ({self.good_reviewed / n_good:.1%}, 95% CI {lo:.1%}-{hi:.1%}); "
            f"{self.defects_caught} of {self.n_defect} defects caught by FAIL or REVIEW "
            f"({self.defects_caught / n_defect:.1%}, 95% CI {clo:.1%}-{chi:.1%}), {self.defects_escaped} passed"
        )


def review_point(labels: np.ndarray, scores: np.ndarray, cal: Calibration) -> ReviewPoint | None:
    """The three-way operating point of a calibration with a review band (None without one)."""
    if cal.review_threshold is None or cal.target_review_rate is None:
        return None
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    verdicts = np.array([cal.verdict_of(float(s)) for s in scores])
    good, bad = verdicts[labels == 0], verdicts[labels == 1]
    reviewed = int(np.count_nonzero(good == "REVIEW"))
    caught = int(np.count_nonzero(bad != "PASS"))
    return ReviewPoint(
        review_threshold=cal.review_threshold,
        target_review_rate=cal.target_review_rate,
        n_good=int(good.size),
        good_reviewed=reviewed,
        good_failed=int(np.count_nonzero(good == "FAIL")),
        n_defect=int(bad.size),
        defects_caught=caught,
        defects_escaped=int(bad.size) - caught,
        review_interval=calib.clopper_pearson(reviewed, max(1, int(good.size))),
        caught_interval=calib.clopper_pearson(caught, max(1, int(bad.size))),
    )


def verdict_line(name: str, op: OperatingPoint) -> str:
    """The sentence a person reads first: does the gallery meet its false-reject target on these images?

    ``<name>: gallery MEETS the 1% false-reject target: 0 of 20 good parts rejected (...), 2 of 63 defects
    passed``; MISSES when more good parts were rejected than the target allows for this many (95%).
    """
    word = "MEETS" if op.meets_target else "MISSES"
    lo, hi = op.interval
    return (
        f"{name}: gallery {word} the {op.target:.2%} false-reject target: {op.false_rejects} of {op.n_good} "
        f"good parts rejected ({op.false_reject_rate:.1%}, 95% CI {lo:.1%}-{hi:.1%}; the target allows at most "
        f"{op.target_counts[1]} of {op.n_good}), {op.escapes} of {op.n_defect} defects passed"
    )


def calibration_lines(cal: Calibration | None) -> list[str]:
    """Markdown lines on how the threshold was set and what its normal images support."""
    if cal is None:
        return []
    how = cal.method + (f" (m={cal.neighbours_left_out})" if cal.neighbours_left_out else "")
    how += f" ({cal.folds} folds)" if cal.folds else ""
    lines = [f"Calibration: {how}, {cal.tail} tail, {cal.n_images} normal images."]
    if cal.false_reject_upper_bound is not None and cal.images_needed is not None:
        lines.append(
            f"{cal.normal_above_threshold} of them above the threshold: at 95% confidence they bound the "
            f"false-reject rate at {cal.false_reject_upper_bound:.2%}; verifying "
            f"{cal.target_false_reject_rate:.2%} needs {cal.images_needed} normal images with no failure."
        )
    return lines


def operating_lines(op: OperatingPoint) -> list[str]:
    """Markdown table: the operating point against the target."""
    lo, hi = op.target_counts
    verdict = "inside" if op.inside_target else ("above" if op.false_rejects > hi else "below")
    escapes = f"{op.escapes}/{op.n_defect} = {op.escapes / max(1, op.n_defect):.2%}"
    oracle = op.test_threshold_escapes
    return [
        "| Operating point | Value |",
        "|---|---|",
        f"| target false-reject rate | {op.target:.2%} |",
        f"| image threshold (calibrated) | {op.threshold:.6g} |",
        (
            f"| false rejects on test/good | {op.false_rejects}/{op.n_good} = {op.false_reject_rate:.2%} "
            f"(95% CI {op.interval[0]:.2%} - {op.interval[1]:.2%}) |"
        ),
        f"| the target's central 95% for {op.n_good} good images | {lo} - {hi} false rejects: {verdict} |",
        f"| escapes at the calibrated threshold | {escapes} |",
        (
            f"| threshold that meets the target on this test set | {op.test_threshold:.6g} (escapes "
            f"{oracle}/{op.n_defect} = {oracle / max(1, op.n_defect):.2%}) |"
        ),
        "",
    ]
