"""End-to-end check on real data (MVTec AD bottle): CLI gallery build, CLI scoring, image AUROC and error counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.support import SHARED_DATA, run_cli

BOTTLE = SHARED_DATA / "mvtec_bottle"
MIN_IMAGE_AUROC = 0.95  # loose floor; published SPADE-style results on bottle are ~0.97-1.0
IMAGE_SUFFIX = ".png"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.slow,
    pytest.mark.skipif(
        not BOTTLE.is_dir(), reason=f"shared data not found: {BOTTLE} (MVTec AD bottle) is absent"
    ),
]


def test_bottle_gallery_build_and_score_reach_the_auroc_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "bottle.safetensors"
    build = run_cli("gallery", "build", "--images", BOTTLE / "train" / "good", "--out", gallery)
    assert build.returncode == 0, build.stderr[-2000:]
    tests = sorted(p for d in sorted((BOTTLE / "test").iterdir()) for p in d.glob(f"*{IMAGE_SUFFIX}"))
    score = run_cli("score", "--gallery", gallery, "--json", *tests)
    assert score.returncode == 0, score.stderr[-2000:]
    docs = [json.loads(line) for line in score.stdout.splitlines()]
    assert sorted(d["path"] for d in docs) == sorted(str(p) for p in tests)

    labels = np.array([Path(d["path"]).parent.name != "good" for d in docs])
    scores = np.array([d["score"] for d in docs])
    fail = np.array([d["verdict"] == "FAIL" for d in docs])
    auroc = float(roc_auc_score(labels, scores))
    false_rejects = int(np.count_nonzero(fail & ~labels))
    escapes = int(np.count_nonzero(~fail & labels))
    per_defect = {
        name: float(roc_auc_score(labels[keep], scores[keep]))
        for name in sorted({Path(d["path"]).parent.name for d in docs} - {"good"})
        if (keep := np.array([Path(d["path"]).parent.name in (name, "good") for d in docs])).any()
    }
    with capsys.disabled():
        print(
            f"\n[bottle] {build.stdout.strip()}\n"
            f"[bottle] images: {labels.size} ({int((~labels).sum())} good, {int(labels.sum())} defective); "
            f"image AUROC {auroc:.4f}; threshold {docs[0]['threshold']:.4f}; "
            f"false rejects {false_rejects}/{int((~labels).sum())}; escapes {escapes}/{int(labels.sum())}\n"
            f"[bottle] AUROC per defect vs good: " + ", ".join(f"{k} {v:.4f}" for k, v in per_defect.items())
        )
    assert auroc >= MIN_IMAGE_AUROC
