"""Tests for inspector.outputs.results over real HTTP: recent verdicts from memory, older ones from the archive."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inspector.config.archive import ArchiveConfig
from inspector.core.records import NO_IMAGE, Frame
from inspector.model.maps import crop_to_frame
from inspector.outputs.archive import DefectArchive
from inspector.outputs.http import HttpServer
from inspector.outputs.results import ResultsApp
from inspector.outputs.ring import ResultsRing
from tests.support import ScoredLine, bus_outcome, decode_image, http_get, stamp_published

RING_PER_CAMERA = 2
JPEG_QUALITY = 90


@pytest.fixture
def served(tmp_path: Path, scored_line: ScoredLine) -> Iterator[str]:
    """Every outcome of the line delivered to a 2-per-camera ring and to the archive; the base URL."""
    ring = ResultsRing(RING_PER_CAMERA, 64.0)
    archive = DefectArchive(tmp_path, ArchiveConfig())
    archive.open()
    for outcome in scored_line.outcomes:
        ring.deliver(outcome)
        if archive.wants(outcome):
            archive.write(outcome)
    app = ResultsApp(["cam1", "cam2"], scored_line.boot_id, ring, archive, JPEG_QUALITY)
    server = HttpServer("results", app.application(), "127.0.0.1", 0)
    port = server.start()
    yield f"http://127.0.0.1:{port}"
    server.close()


def get_json(url: str) -> tuple[int, dict[str, object]]:
    status, body, content_type = http_get(url)
    assert content_type.startswith("application/json"), (status, body[:200])
    doc: dict[str, object] = json.loads(body)
    return status, doc


def test_a_recent_verdict_comes_from_memory_with_its_published_header_and_images(
    served: str, scored_line: ScoredLine
) -> None:
    outcome = scored_line.outcomes[-1]
    assert outcome.verdict == "FAIL" and outcome.mask is not None and outcome.crop_box is not None
    status, doc = get_json(f"{served}/results/cam1/{outcome.seq}")
    assert status == 200 and doc["source"] == "memory"
    assert doc["header"] == json.loads(outcome.published or "")
    images = doc["images"]
    assert isinstance(images, dict) and set(images) == {
        "frame.png",
        "overlay.jpg",
        "mask.png",
        "mask_frame.png",
    }
    mask = decode_image(http_get(served + images["mask.png"])[1])
    assert np.array_equal(mask, outcome.mask)
    in_frame = decode_image(http_get(served + images["mask_frame.png"])[1])
    assert np.array_equal(
        in_frame, crop_to_frame(outcome.mask, outcome.crop_box, outcome.frame.image.shape[:2])
    )
    overlay = decode_image(http_get(served + images["overlay.jpg"])[1])
    assert overlay.shape == outcome.frame.image.shape
    assert get_json(f"{served}/results/cam1/latest")[1]["header"] == doc["header"]


def test_an_older_verdict_comes_from_the_archive_with_the_same_documents(
    served: str, scored_line: ScoredLine
) -> None:
    outcome = next(o for o in scored_line.outcomes if o.verdict == "FAIL")
    assert outcome.seq < len(scored_line.outcomes) - RING_PER_CAMERA  # no longer in memory
    status, doc = get_json(f"{served}/results/cam1/{outcome.seq}")
    assert status == 200 and doc["source"] == "archive"
    assert doc["header"] == json.loads(outcome.published or "")
    evidence = doc["evidence"]
    assert isinstance(evidence, dict) and evidence["neighbours"] == list(outcome.neighbours)
    status, body, content_type = http_get(f"{served}/results/cam1/{outcome.seq}/frame.png")
    assert status == 200 and content_type == "image/png"
    assert np.array_equal(decode_image(body), outcome.frame.image)


def test_unknown_cameras_seqs_and_images_are_404_and_bad_input_400_naming_it(
    served: str, scored_line: ScoredLine
) -> None:
    passed = next(o for o in scored_line.outcomes if o.verdict == "PASS")  # PASS: not archived, left the ring
    status, doc = get_json(f"{served}/results/cam1/{passed.seq}")
    assert status == 404 and f"seq {passed.seq}" in str(doc["error"])
    status, doc = get_json(f"{served}/results/nope/1")
    assert status == 404 and "'nope'" in str(doc["error"])
    status, doc = get_json(f"{served}/results/cam2/latest")
    assert status == 404 and "cam2 has no verdict yet" in str(doc["error"])
    assert get_json(f"{served}/results/cam1/x1")[0] == 400
    assert get_json(f"{served}/results/cam1/1?boot_id=zz")[0] == 400
    assert get_json(f"{served}/results/cam1/{len(scored_line.outcomes) - 1}/nothing.gif")[0] == 404


def test_an_error_without_a_frame_is_served_as_json_with_no_images_and_its_images_are_404(
    tmp_path: Path, scored_line: ScoredLine
) -> None:
    now = time.time()
    fault = Frame("cam1", 50, now, now, NO_IMAGE, "P-50", "a", "no frame within trigger_timeout_ms")
    outcome = stamp_published(bus_outcome(fault, "ERROR", error="no frame"), scored_line.boot_id, now)
    ring = ResultsRing(RING_PER_CAMERA, 64.0)
    archive = DefectArchive(tmp_path, ArchiveConfig())
    archive.open()
    ring.deliver(outcome)
    record = archive.write(outcome)
    assert record is not None and {p.name for p in record.path.iterdir()} == {"header.json", "evidence.json"}
    server = HttpServer("results", ResultsApp(["cam1"], scored_line.boot_id, ring, archive, 90).application(),
                        "127.0.0.1", 0)  # fmt: skip
    base = f"http://127.0.0.1:{server.start()}"
    try:
        for url in (f"{base}/results/cam1/50", f"{base}/results/cam1/latest"):
            status, doc = get_json(url)
            assert status == 200 and doc["images"] == {} and doc["evidence"]["frame_width"] == 0  # type: ignore[index]
        for image in ("overlay.jpg", "frame.png", "mask.png"):
            assert http_get(f"{base}/results/cam1/50/{image}")[0] == 404
        ring.close()  # only the archive has it now
        status, doc = get_json(f"{base}/results/cam1/50")
        assert status == 200 and doc["source"] == "archive" and doc["images"] == {}
        assert http_get(f"{base}/results/cam1/50/frame.png")[0] == 404
        assert get_json(f"{base}/results/cam1/latest?boot_id={'0' * 32}")[0] == 404
        assert get_json(f"{base}/results/cam1/latest?boot_id={scored_line.boot_id}")[0] == 200
    finally:
        server.close()
