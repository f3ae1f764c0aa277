"""Line control against the real daemon process: triggers, products and changeovers, reloads, pause, ctl status."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from inspector.bus.control import request
from inspector.bus.wire import VerdictHeader
from inspector.demo.data import write_demo_video
from tests.processes import DaemonProcess, Subscriber
from tests.support import (
    SyntheticGallery,
    build_synthetic_gallery,
    free_port,
    metric,
    run_cli,
    scrape,
    wait_until,
)
from tests.toml_config import BATCHING, tcp, video_camera, write_daemon_config

CAMERA = "line"
CAMERA_FPS = 10.0
TRIGGERS = 50
TRIGGER_TIMEOUT_MS = 2000.0
STEADY_TRIGGER_PERIOD_S = 0.15
REQUEST_TIMEOUT_S = 60.0
PART_PREFIX = "A-"

Context = zmq.Context[zmq.Socket[bytes]]


@dataclass
class Line:
    """A running daemon with one external-trigger camera, two products, and its sockets."""

    daemon: DaemonProcess
    bus: Subscriber
    context: Context
    push: zmq.Socket[bytes]
    control: str
    metrics_port: int
    galleries: dict[str, Path]
    hashes: dict[str, str]
    spare: SyntheticGallery

    def ctl(self, **payload: Any) -> dict[str, Any]:
        """One control request, its answer."""
        return request(self.context, self.control, payload, REQUEST_TIMEOUT_S)

    def trigger(self, part_id: str, **extra: Any) -> None:
        """Send a trigger on the PULL socket."""
        self.push.send(json.dumps({"camera": CAMERA, "part_id": part_id, **extra}).encode())

    def verdicts_for(self, part_ids: list[str]) -> list[VerdictHeader]:
        """Wait for the verdicts of these parts; return them in arrival order."""
        wanted = set(part_ids)

        def missing() -> list[str]:
            return sorted(wanted - {v.part_id or "" for v in self.bus.got.of(CAMERA)})

        try:
            wait_until(lambda: not missing(), f"verdicts for {len(wanted)} parts")
        except AssertionError as exc:
            tail = "".join(self.daemon.raw)[-2000:]
            raise AssertionError(f"{exc}; still missing {missing()[:10]}; daemon log tail: {tail}") from None
        return [v for v in self.bus.got.of(CAMERA) if v.part_id in wanted]


def line_config(folder: Path, video: Path, galleries: dict[str, Path], ports: dict[str, int]) -> Path:
    camera = video_camera(
        CAMERA, video, CAMERA_FPS, trigger="external", trigger_timeout_ms=TRIGGER_TIMEOUT_MS, product="a"
    )
    return write_daemon_config(
        folder / "line.toml",
        root={},
        products=[{"name": n, "gallery": g} for n, g in galleries.items()],
        cameras=[camera],
        triggers={"bind": tcp(ports["triggers"])},
        control={"enabled": True, "bind": tcp(ports["control"])},
        batching={**BATCHING, "max_wait_ms": 10},
        bus={"bind": tcp(ports["bus"])},
        metrics={"port": ports["metrics"]},
    )


@pytest.fixture(scope="module")
def line(synthetic_gallery: SyntheticGallery, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    folder = tmp_path_factory.mktemp("line")
    other = build_synthetic_gallery(folder / "b", 8, seed=21)
    spare = build_synthetic_gallery(folder / "spare", 8, seed=33)
    galleries = {"a": folder / "a.safetensors", "b": folder / "b.safetensors"}
    shutil.copyfile(synthetic_gallery.path, galleries["a"])
    shutil.copyfile(other.path, galleries["b"])
    video = folder / "line.avi"
    write_demo_video(video, 20, CAMERA_FPS, 4, 160, seed=5)
    ports = {name: free_port() for name in ("triggers", "control", "bus", "metrics")}
    config = line_config(folder, video, galleries, ports)
    bus = Subscriber(f"tcp://127.0.0.1:{ports['bus']}")
    daemon = DaemonProcess(config)
    context: Context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{ports['triggers']}")
    try:
        daemon.wait_event("daemon_ready")
        hashes = {"a": synthetic_gallery.content_hash, "b": other.content_hash}
        yield Line(daemon, bus, context, push, f"tcp://127.0.0.1:{ports['control']}", ports["metrics"],
                   galleries, hashes, spare)  # fmt: skip
        assert daemon.terminate() == 0
    finally:
        push.close(linger=0)
        context.term()
        bus.close()
        daemon.close()


def test_ctl_status_reports_cameras_products_uptime_and_boot_id(line: Line) -> None:
    proc = run_cli("ctl", "--connect", line.control, "status")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["ok"] is True and status["state"] in ("ready", "degraded")
    assert len(status["boot_id"]) == 32 and status["uptime_s"] > 0
    camera = status["cameras"][CAMERA]
    assert {"state", "fps", "trigger", "product", "queue_depth", "pending_triggers", "last_seq"} <= set(
        camera
    )
    assert (camera["trigger"], camera["product"]) == ("external", "a")
    assert set(status["products"]) == {"a", "b"}
    for name, product in status["products"].items():
        assert product["gallery_hash"] == line.hashes[name] and product["image_count"] > 0
        assert product["gallery"] == str(line.galleries[name]) and product["feature_bytes"] > 0


def test_fifty_triggers_give_fifty_verdicts_with_their_part_ids_in_trigger_order(line: Line) -> None:
    parts = [f"{PART_PREFIX}{i:06d}" for i in range(TRIGGERS)]
    for part in parts:
        line.trigger(part)
    verdicts = line.verdicts_for(parts)
    assert [v.part_id for v in verdicts] == parts
    seqs = [v.seq for v in verdicts]
    assert seqs == sorted(seqs) and len(set(seqs)) == TRIGGERS
    assert all(v.verdict in ("PASS", "FAIL") and v.product == "a" for v in verdicts)
    assert {v.gallery for v in verdicts} == {line.hashes["a"]}


def test_a_trigger_for_a_paused_camera_gets_an_error_verdict_with_its_part_id(line: Line) -> None:
    assert line.ctl(cmd="pause", camera=CAMERA)["ok"]
    wait_until(lambda: line.ctl(cmd="status")["cameras"][CAMERA]["state"] == "paused", "the camera paused")
    assert line.ctl(cmd="status")["state"] == "ready"  # paused is not a fault
    line.trigger("P-paused")
    (verdict,) = line.verdicts_for(["P-paused"])
    assert verdict.verdict == "ERROR" and verdict.error is not None and "trigger_timeout_ms" in verdict.error
    assert line.ctl(cmd="resume", camera=CAMERA)["ok"]
    line.trigger("P-resumed")
    (after,) = line.verdicts_for(["P-resumed"])
    assert after.verdict in ("PASS", "FAIL")


def test_malformed_triggers_are_counted_answered_and_leave_the_daemon_working(line: Line) -> None:
    before = metric(scrape(line.metrics_port), "inspector_triggers_rejected_total", reason="malformed")
    line.push.send(b"{not json")
    line.push.send(json.dumps({"camera": CAMERA}).encode())  # no part id: no place in a sequence
    answer = line.ctl(cmd="trigger", camera="nowhere", part_id="X-1")
    assert answer["ok"] is False and answer["reason"] == "unknown_camera" and "nowhere" in answer["error"]
    assert line.ctl(cmd="launch")["error"].startswith("unknown cmd 'launch'")
    wait_until(
        lambda: (
            metric(scrape(line.metrics_port), "inspector_triggers_rejected_total", reason="malformed")
            >= before + 2
        ),
        "the malformed triggers counted",
    )
    line.trigger("M-bad-product", product="no-such-product")  # a known camera and part id: an ERROR verdict
    line.trigger("M-good")
    bad, good = line.verdicts_for(["M-bad-product", "M-good"])
    assert (
        bad.verdict == "ERROR" and bad.error is not None and "unknown product 'no-such-product'" in bad.error
    )
    assert good.verdict in ("PASS", "FAIL") and line.daemon.proc.poll() is None


class SteadyTriggers:
    """Sends a trigger every STEADY_TRIGGER_PERIOD_S from a thread until stopped; remembers the part ids."""

    def __init__(self, line: Line, prefix: str) -> None:
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._push = line.context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 1000)
        self._push.connect(line.push.getsockopt_string(zmq.LAST_ENDPOINT))
        self._prefix = prefix
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(STEADY_TRIGGER_PERIOD_S):
            part = f"{self._prefix}{len(self.sent):05d}"
            self._push.send(json.dumps({"camera": CAMERA, "part_id": part}).encode())
            self.sent.append(part)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        self._push.close()
        return self.sent


def switch_points(verdicts: list[VerdictHeader]) -> list[int]:
    """Indexes where the product of consecutive verdicts changes."""
    return [i for i in range(1, len(verdicts)) if verdicts[i].product != verdicts[i - 1].product]


def test_a_product_changeover_under_steady_triggers_switches_at_exactly_one_point(line: Line) -> None:
    assert line.ctl(cmd="product", camera=CAMERA, product="a")["ok"]
    steady = SteadyTriggers(line, "C-")
    wait_until(lambda: len(steady.sent) >= 8, "triggers before the changeover")
    asked_at = time.monotonic()
    answer = line.ctl(cmd="product", camera=CAMERA, product="b")
    assert answer == {"ok": True, "camera": CAMERA, "product": "b", "previous": "a"}
    wait_until(lambda: any(v.product == "b" for v in line.bus.got.of(CAMERA)), "a verdict on product b")
    first_b = time.monotonic() - asked_at
    wait_until(lambda: len(steady.sent) >= 20, "triggers after the changeover")
    sent = steady.stop()
    verdicts = line.verdicts_for(sent)
    assert [v.part_id for v in verdicts] == sent  # every trigger answered, in order
    assert switch_points(verdicts) == [next(i for i, v in enumerate(verdicts) if v.product == "b")]
    for v in verdicts:
        assert v.gallery == line.hashes[v.product or ""]
    print(f"\n[changeover] product command to the first verdict on the new gallery: {first_b * 1000:.0f} ms")


def test_reload_refuses_a_corrupt_gallery_keeping_the_old_and_swaps_a_good_one_losing_nothing(
    line: Line,
) -> None:
    assert line.ctl(cmd="product", camera=CAMERA, product="a")["ok"]
    original = line.galleries["a"].read_bytes()
    line.galleries["a"].write_bytes(original[: len(original) // 2])  # truncated
    refused = line.ctl(cmd="reload", product="a")
    assert (
        refused["ok"] is False
        and "truncated" in refused["error"]
        and "the old gallery stays" in refused["error"]
    )
    assert refused["results"][0]["gallery_hash"] == line.hashes["a"]
    line.trigger("R-after-refusal")
    (kept,) = line.verdicts_for(["R-after-refusal"])
    assert kept.verdict in ("PASS", "FAIL") and kept.gallery == line.hashes["a"]

    steady = SteadyTriggers(line, "R-")
    wait_until(lambda: len(steady.sent) >= 5, "triggers before the swap")
    shutil.copyfile(line.spare.path, line.galleries["a"])
    swapped = line.ctl(cmd="reload")
    assert swapped["ok"] is True and {r["product"] for r in swapped["results"]} == {"a", "b"}
    wait_until(
        lambda: any(v.gallery == line.spare.content_hash for v in line.bus.got.of(CAMERA)), "the new gallery"
    )
    wait_until(lambda: len(steady.sent) >= 15, "triggers after the swap")
    sent = steady.stop()
    verdicts = line.verdicts_for(sent)
    assert [v.part_id for v in verdicts] == sent and all(v.verdict in ("PASS", "FAIL") for v in verdicts)
    galleries = [v.gallery for v in verdicts]
    first_new = galleries.index(line.spare.content_hash)
    assert set(galleries[:first_new]) == {line.hashes["a"]} and set(galleries[first_new:]) == {
        line.spare.content_hash
    }
    samples = scrape(line.metrics_port)
    assert metric(samples, "inspector_gallery_reloads_total", product="a", result="refused") == 1
    assert metric(samples, "inspector_gallery_reloads_total", product="a", result="ok") == 1
    line.hashes["a"] = line.spare.content_hash


def test_the_control_socket_answers_garbage_with_an_error_and_keeps_answering(line: Line) -> None:
    for garbage in (b"\xff\xfe not json", b"[1, 2, 3]", b'{"cmd": 7}'):
        sock = line.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(line.control)
        sock.send(garbage)
        assert sock.poll(int(REQUEST_TIMEOUT_S * 1000)), f"no answer to {garbage!r}"
        answer = json.loads(sock.recv())
        sock.close(linger=0)
        assert answer["ok"] is False and answer["error"]
    assert line.ctl(cmd="status")["ok"] is True


def test_ctl_exits_1_naming_the_endpoint_when_no_daemon_answers() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = run_cli("ctl", "--connect", endpoint, "--timeout-s", "1", "status")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: no answer from {endpoint} within 1 s (is the control socket on?)"


def test_sighup_reloads_every_product(line: Line) -> None:
    before = len(line.daemon.events("gallery_reloaded"))
    line.daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(line.daemon.events("gallery_reloaded")) >= before + 2, "both products reloaded")
    assert {e["product"] for e in line.daemon.events("gallery_reloaded")[before:]} == {"a", "b"}
    assert line.daemon.proc.poll() is None
