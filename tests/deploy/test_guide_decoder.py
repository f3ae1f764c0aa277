"""The integration guide's C decoder (libzmq, cJSON, libpng), built from docs/integration.md as written: a second
language decodes a verdict with each mask kind, and a heartbeat, from the documented format alone."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from inspector.bus.publisher import Publisher
from inspector.bus.wire import CameraStatus, Heartbeat, anomaly_map_to_u8, new_boot_id, rfc3339
from inspector.config.bus import BusConfig, MaskMode
from inspector.core.records import Frame, Outcome
from tests.deploy.test_deploy import guide_code, pump_lines, require, run_tool
from tests.support import bus_outcome

DEADLINE_S = 60.0
PROBE_S = 0.2
MAP_SIDE_PX = 56
PIXEL_THRESHOLD = 2.0
SECTION = "Decoding a verdict, its mask and a heartbeat in C"

Context = zmq.Context[zmq.Socket[bytes]]


def build_decoder(folder: Path) -> list[str]:
    """The guide's decoder, compiled with the build line the guide gives (skips without a toolchain)."""
    compiler = require("cc", "gcc")
    pkg_config = require("pkg-config", "pkg-config")
    flags = run_tool([pkg_config, "--cflags", "--libs", "libzmq", "libcjson", "libpng"])
    if flags.returncode != 0:
        pytest.skip(
            f"headers missing: apt-get install -y libzmq3-dev libcjson-dev libpng-dev ({flags.stderr})"
        )
    source = folder / "decode.c"
    source.write_text(guide_code(SECTION, "c"), encoding="utf-8")
    binary = folder / "decode"
    cmd = [compiler, "-std=c11", "-Wall", "-Wextra", "-Werror", str(source), "-o", str(binary)]
    built = run_tool([*cmd, *flags.stdout.split()])
    assert built.returncode == 0, built.stderr
    return [str(binary)]


def smooth_map(seed: int) -> np.ndarray:
    """An anomaly map as SPADE makes one: a coarse grid upsampled and blurred, a blob above the threshold."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((7, 7), dtype=np.float32) * 1.5
    coarse[3, 4] = 6.0  # the defect
    amap = cv2.resize(coarse, (MAP_SIDE_PX, MAP_SIDE_PX), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.GaussianBlur(amap, (0, 0), 2.0), dtype=np.float32)


def scored(camera: str, seq: int, amap: np.ndarray) -> Outcome:
    """A FAIL whose map, mask and defect area agree, as the engine gives them."""
    frame = Frame(camera, seq, time.time(), time.monotonic(), np.zeros((4, 4, 3), np.uint8), f"p{seq}")
    mask = np.where(amap > PIXEL_THRESHOLD, 255, 0).astype(np.uint8)
    return bus_outcome(
        frame, "FAIL", score=2.5, pixel_threshold=PIXEL_THRESHOLD, defect_area_px=int(np.count_nonzero(mask)),
        defect_count=1, anomaly_map=amap, mask=mask,
    )  # fmt: skip


@pytest.fixture
def publishers() -> Iterator[dict[MaskMode, Publisher]]:
    """One bound publisher per bus.mask mode (the decoder connects to all three)."""
    context: Context = zmq.Context()
    with ExitStack() as stack:
        modes: tuple[MaskMode, ...] = ("anomaly_map", "binary", "none")
        pubs = {
            mode: stack.enter_context(
                Publisher(BusConfig(bind="tcp://127.0.0.1:*", mask=mode, linger_ms=0), context, new_boot_id())
            )
            for mode in modes
        }
        yield pubs
    context.destroy(linger=0)


def heartbeat(pub: Publisher, state: str, worker: str, cameras: dict[str, CameraStatus]) -> Heartbeat:
    return Heartbeat(
        boot_id=pub.boot_id, published_at=rfc3339(time.time()), state=state, uptime_s=5.0, cameras=cameras,
        frames_published=pub.verdicts_published, worker=worker, worker_alive=worker in ("up", "stopping"),
    )  # fmt: skip


def next_line(lines: queue.Queue[str], prefix: str) -> str:
    """The decoder's next line that starts with ``prefix`` (heartbeats still in flight are skipped)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=PROBE_S)
        except queue.Empty:
            continue
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the decoder printed no line starting {prefix!r} within {DEADLINE_S} s")


def wait_until_heard(pubs: dict[MaskMode, Publisher], lines: queue.Queue[str]) -> None:
    """Heartbeats from every publisher until the decoder printed one of each (the slow joiner)."""
    heard: set[str] = set()
    deadline = time.monotonic() + DEADLINE_S
    while heard != {pub.boot_id[:8] for pub in pubs.values()}:
        assert time.monotonic() < deadline, f"the decoder heard only {heard}"
        for pub in pubs.values():
            pub.publish_heartbeat(heartbeat(pub, "ready", "up", {}))
        try:
            line = lines.get(timeout=PROBE_S)
        except queue.Empty:
            continue
        if line.startswith("heartbeat "):
            heard.add(line.split()[1])


def test_the_guides_c_decoder_reads_verdicts_each_mask_kind_and_a_heartbeat(
    tmp_path: Path, publishers: dict[MaskMode, Publisher]
) -> None:
    command = build_decoder(tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    proc = subprocess.Popen(
        [*command, *(p.endpoint for p in publishers.values())], stdout=subprocess.PIPE, text=True
    )
    reader = threading.Thread(target=pump_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        wait_until_heard(publishers, lines)
        amap = smooth_map(seed=4)
        publishers["anomaly_map"].publish(scored("map", 7, amap))
        got_map = next_line(lines, "verdict map ")
        publishers["binary"].publish(scored("bin", 3, amap))
        got_binary = next_line(lines, "verdict bin ")
        publishers["none"].publish(
            bus_outcome(Frame("none", 2, 0.0, 0.0, np.zeros((2, 2, 3), np.uint8)), "ERROR")
        )
        got_error = next_line(lines, "verdict none ")
        stopping = {"map": CameraStatus(state="stopping", up=False, frames=8, last_seq=7)}
        publishers["anomaly_map"].publish_heartbeat(
            heartbeat(publishers["anomaly_map"], "stopping", "stopping", stopping)
        )
        got_heartbeat = next_line(lines, f"heartbeat {publishers['anomaly_map'].boot_id[:8]} stopping")
    finally:
        proc.kill()
        proc.wait()
        reader.join(DEADLINE_S)
        if proc.stdout is not None:
            proc.stdout.close()
    defects = int(np.count_nonzero(amap > PIXEL_THRESHOLD))
    assert 0 < defects < amap.size
    largest = int(anomaly_map_to_u8(amap, PIXEL_THRESHOLD).max())
    prefix = f"verdict map 7 p7 FAIL REJECT score=2.500000 defect_area_px={defects} "
    assert got_map.startswith(
        prefix + f"mask=anomaly_map_u8 {MAP_SIDE_PX}x{MAP_SIDE_PX} defect_px={defects} "
    )
    match = re.search(r"max_u8=(\d+) map_at_max=([\d.]+)\.\.([\d.]+|inf)$", got_map)
    assert match is not None and int(match[1]) == largest, got_map
    low, high = float(match[2]), float(match[3])
    assert low - 1e-6 <= float(amap.max()) <= high + 1e-6, (got_map, float(amap.max()))  # back to the map
    assert got_binary == (
        f"verdict bin 3 p3 FAIL REJECT score=2.500000 defect_area_px={defects} "
        f"mask=binary {MAP_SIDE_PX}x{MAP_SIDE_PX} defect_px={defects}"
    )
    assert got_error == "verdict none 2 - ERROR REJECT error=error for the test mask=none"
    assert (
        got_heartbeat
        == f"heartbeat {publishers['anomaly_map'].boot_id[:8]} stopping worker=stopping map=stopping:7"
    )
