"""End-to-end tests of the daemon's evidence outputs: ``inspector run`` as a real process with a video camera,
its archive on disk, its results endpoint, its live view in headless Chromium, a read-only archive."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from selenium.webdriver.common.by import By

from inspector.bus.wire import VerdictHeader
from inspector.outputs.evidence import Evidence
from tests.browser import BROWSER_WAIT_S, browser
from tests.processes import DaemonProcess, Subscriber
from tests.support import (
    LabelledVideo,
    SyntheticGallery,
    decode_image,
    free_port,
    http_get,
    metric,
    read_png,
    scrape,
    wait_until,
)
from tests.toml_config import BATCHING, video_camera, write_daemon_config

CAMERA = "line"
CAMERA_FPS = 4.0
FRAME_PX = 160
ARCHIVE_MAX_MB = 0.25  # a few records of a 160 px camera: retention has to work during the test
MIB = 1 << 20


@dataclass
class RunningDaemon:
    """A daemon with its archive folder, ports and a subscriber connected before it started."""

    daemon: DaemonProcess
    sub: Subscriber
    archive: Path
    metrics_port: int
    results_port: int
    liveview_port: int


def evidence_config(
    folder: Path, gallery: Path, video: Path, archive: Path, bus: str, ports: tuple[int, int, int]
) -> Path:
    metrics_port, results_port, liveview_port = ports
    return write_daemon_config(
        folder / "evidence.toml",
        cameras=[video_camera(CAMERA, video, CAMERA_FPS)],
        worker={"gallery": gallery},
        batching={**BATCHING, "deadline_ms": 30000},
        bus={"bind": bus},
        metrics={"port": metrics_port},
        archive={"directory": archive, "max_total_mb": ARCHIVE_MAX_MB},
        results={"enabled": True, "port": results_port},
        liveview={"enabled": True, "port": liveview_port},
        drift={"min_pass_scores": 3},
    )


def start(
    folder: Path, gallery: Path, video: Path, archive: Path, prefix: tuple[str, ...] = ()
) -> RunningDaemon:
    ports = (free_port(), free_port(), free_port())
    bus = f"tcp://127.0.0.1:{free_port()}"
    sub = Subscriber(bus)
    daemon = DaemonProcess(evidence_config(folder, gallery, video, archive, bus, ports), prefix)
    return RunningDaemon(daemon, sub, archive, *ports)


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, synthetic_gallery: SyntheticGallery
) -> Iterator[RunningDaemon]:
    """One daemon for the archive, results and live-view tests: a looping demo video, one part in four bad."""
    from inspector.demo.data import write_demo_video

    folder = tmp_path_factory.mktemp("evidence")
    video = folder / "line.avi"
    write_demo_video(video, 16, CAMERA_FPS, 4, FRAME_PX, seed=3)
    run = start(folder, synthetic_gallery.path, video, folder / "archive")
    try:
        run.daemon.wait_event("daemon_ready")
        yield run
        assert run.daemon.terminate() == 0
    finally:
        run.sub.close()
        run.daemon.close()


def fail_headers(run: RunningDaemon) -> list[VerdictHeader]:
    with run.sub.got.lock:
        return [h for h in run.sub.got.headers.values() if h.verdict == "FAIL"]


def records(archive: Path) -> list[Path]:
    return sorted(p for p in archive.glob(f"{CAMERA}/*/*") if p.is_dir() and not p.name.startswith(".tmp-"))


def test_archive_records_are_complete_after_fails_and_retention_holds_the_size_limit(
    running: RunningDaemon,
) -> None:
    def removed() -> float:
        return metric(scrape(running.metrics_port), "inspector_archive_removed_total", reason="size")

    wait_until(
        lambda: removed() >= 2 and len(fail_headers(running)) >= 5, "FAILs archived and removed for size"
    )
    kept = records(running.archive)
    assert kept, "retention removed every record"
    received = {(h.camera, h.seq): h for h in fail_headers(running)}
    total = 0
    for folder in kept:
        header = VerdictHeader.model_validate_json((folder / "header.json").read_bytes())
        if (header.camera, header.seq) in received:  # the subscriber may not have seen the newest yet
            assert header == received[(header.camera, header.seq)], "the archive's header is not the bus's"
        evidence = Evidence.model_validate_json((folder / "evidence.json").read_bytes())
        assert header.verdict == evidence.verdict == "FAIL" and evidence.neighbours
        assert read_png(folder / "frame.png").shape == (FRAME_PX, FRAME_PX, 3)
        assert read_png(folder / "mask_frame.png").shape == (FRAME_PX, FRAME_PX)
        assert decode_image((folder / "overlay.jpg").read_bytes()).shape == (FRAME_PX, FRAME_PX, 3)
        total += sum(f.stat().st_size for f in folder.iterdir())
    assert total <= ARCHIVE_MAX_MB * MIB
    first_fail = min(received)
    assert not any(f"_{first_fail[1]:08d}_" in p.name for p in kept), "the oldest record outlived retention"
    samples = scrape(running.metrics_port)
    assert metric(samples, "inspector_archive_records_total", camera=CAMERA, verdict="FAIL") >= len(kept)
    assert metric(samples, "inspector_sink_dropped_total", sink="archive", reason="queue_full") == 0


def test_results_endpoint_returns_the_image_of_a_verdict_received_on_the_bus(running: RunningDaemon) -> None:
    wait_until(lambda: fail_headers(running), "a FAIL verdict on the bus")
    header = max(fail_headers(running), key=lambda h: h.seq)  # recent: still in the in-memory ring
    base = f"http://127.0.0.1:{running.results_port}"
    status, body, _ = http_get(f"{base}/results/{CAMERA}/{header.seq}")
    assert status == 200, body
    doc = json.loads(body)
    assert VerdictHeader.model_validate(doc["header"]) == header
    overlay = decode_image(http_get(base + doc["images"]["overlay.jpg"])[1])
    assert overlay.shape == (FRAME_PX, FRAME_PX, 3)
    in_frame = decode_image(http_get(base + doc["images"]["mask_frame.png"])[1])
    in_crop = decode_image(http_get(base + doc["images"]["mask.png"])[1])
    assert in_frame.shape == (FRAME_PX, FRAME_PX) and in_crop.shape == (128, 128)
    assert np.count_nonzero(in_crop) == header.defect_area_px
    boxes = doc["evidence"]["defect_boxes"]
    assert boxes["crop"] is not None and boxes["frame"] is not None
    latest = json.loads(http_get(f"{base}/results/{CAMERA}/latest")[1])
    assert latest["header"]["seq"] >= header.seq


def test_live_view_in_headless_chromium_shows_the_image_and_the_verdict_changes_on_a_defective_frame(
    running: RunningDaemon, tmp_path: Path
) -> None:
    driver = browser()
    try:
        driver.set_page_load_timeout(BROWSER_WAIT_S)
        driver.get(f"http://127.0.0.1:{running.liveview_port}/")
        card = f'section.card[data-camera="{CAMERA}"]'
        script = f"const i = document.querySelector('{card} img.frame'); return i ? i.naturalWidth : 0;"
        wait_until(lambda: driver.execute_script(script) > 0, "the live image to load", BROWSER_WAIT_S)
        seen: list[str] = []

        def verdict_changed_to_fail() -> bool:
            text = driver.find_element(By.CSS_SELECTOR, f"{card} .verdict").text
            if not seen or seen[-1] != text:
                seen.append(text)
            return "PASS" in seen and seen[-1] == "FAIL"

        wait_until(verdict_changed_to_fail, "the verdict text to go from PASS to FAIL", BROWSER_WAIT_S)
        assert driver.find_element(By.CSS_SELECTOR, "#daemon").text.lower() in {"ready", "degraded"}
        shot = tmp_path / "liveview.png"
        assert driver.save_screenshot(str(shot))
        assert read_png(shot).shape[0] > 100
    finally:
        driver.quit()


def read_only_prefix(archive: Path) -> tuple[tuple[str, ...], str]:
    """How to make ``archive`` read-only for the daemon alone, and the skip reason that follows.

    Root writes through permission bits, so as root the daemon runs in a mount namespace of its own with
    the folder bind-mounted read-only (EROFS); otherwise the folder loses its write bit (EACCES).
    """
    if os.geteuid() != 0:
        archive.chmod(0o555)
        return (), "permission_denied"
    unshare = shutil.which("unshare")
    probe = (
        subprocess.run([unshare or "unshare", "-m", "true"], capture_output=True, check=False)
        if unshare
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip(
            "running as root without unshare -m (util-linux): cannot make a folder read-only for root"
        )
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return (str(unshare), "-m", "sh", "-c", script, str(archive)), "read_only"


def test_a_read_only_archive_leaves_inspection_running_with_skipped_writes_counted(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, labelled_video: LabelledVideo
) -> None:
    video, _ = labelled_video("ro", 16, seed=3, fps=CAMERA_FPS)
    archive = tmp_path / "archive"
    archive.mkdir()
    prefix, reason = read_only_prefix(archive)
    run = start(tmp_path, synthetic_gallery.path, video, archive, prefix)
    try:
        run.daemon.wait_event("daemon_ready")

        def skipped() -> float:
            samples = scrape(run.metrics_port)
            return metric(samples, "inspector_archive_skipped_writes_total", camera=CAMERA, reason=reason)

        wait_until(lambda: skipped() >= 3, f"archive writes skipped as {reason}")
        fails_before = len(fail_headers(run))
        wait_until(
            lambda: len(fail_headers(run)) >= fails_before + 2, "FAIL verdicts while the archive is read-only"
        )
        assert run.daemon.proc.poll() is None
        assert records(archive) == []
        assert run.daemon.event("archive_write_skipped") is not None  # the log says so, once a minute at most
        assert run.daemon.terminate() == 0
    finally:
        run.sub.close()
        run.daemon.close()
        archive.chmod(0o755)
