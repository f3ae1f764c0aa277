"""A memory-bank gallery with an inspection region, end to end: built and used by the score CLI, then by the
real daemon (a folder camera), its defect regions read on the bus and from its OPC UA server."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.core.names import EXIT_OK
from inspector.demo.data import write_dataset
from inspector.model.build import list_images
from inspector.model.gallery import load_gallery
from inspector.model.preprocess import read_image
from tests.plc.opcua_client import camera, client, read, wait_for
from tests.processes import DaemonProcess, Subscriber
from tests.support import free_port, paste_defect, run_cli, wait_until
from tests.toml_config import NO_METRICS, tcp, write_daemon_config

SIZE_PX = 128
N_TRAIN = 20
DEFECT_AT = (40, 64)  # (x, y) in the left half, mirrored into the right half
CONFIG_TOML = f"""
[model]
resize_px = {SIZE_PX}
image_score = "map_max"
image_k = 4
pixel_k = 4
neighbourhood_px = 1
stage_fusion = "mean"
pixel_search = "memory_bank"
coreset_fraction = 0.25

[runtime]
batch_size = 4
"""
CAMERA = "line"


@dataclass(frozen=True)
class Scene:
    """The gallery (right half inspected), its region mask, and three frames: good, and one defect pasted in
    the ignored half and in the inspected half."""

    gallery: Path
    region: Path
    frames: Path
    config: Path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    root = tmp_path_factory.mktemp("regions")
    data = write_dataset(
        root, "part", n_train=N_TRAIN, n_test_good=1, n_test_per_defect=1, size_px=SIZE_PX, seed=4
    )
    region = root / "right_half.png"
    mask = np.zeros((SIZE_PX, SIZE_PX), np.uint8)
    mask[:, SIZE_PX // 2 :] = 255
    cv2.imwrite(str(region), mask)
    config = root / "model.toml"
    config.write_text(CONFIG_TOML)
    gallery = root / "part.gallery"
    built = run_cli("gallery", "build", "--images", data / "train" / "good", "--out", gallery, "--config", config,
                    "--region-mask", region)  # fmt: skip
    assert built.returncode == EXIT_OK, built.stderr[-2000:]
    frames = root / "frames"
    frames.mkdir()
    good = read_image(list_images(data / "test" / "good")[0])
    cv2.imwrite(str(frames / "a_good.png"), good)
    cv2.imwrite(str(frames / "b_ignored.png"), paste_defect(good, DEFECT_AT))
    cv2.imwrite(
        str(frames / "c_inspected.png"), paste_defect(good, (SIZE_PX - 1 - DEFECT_AT[0], DEFECT_AT[1]))
    )
    return Scene(gallery, region, frames, config)


def test_the_score_cli_passes_the_defect_in_the_ignored_half_and_fails_it_in_the_inspected_half(
    scene: Scene,
) -> None:
    g = load_gallery(scene.gallery)
    assert g.manifest.memory_bank is not None and g.manifest.region is not None and g.region is not None
    proc = run_cli("score", "--gallery", scene.gallery, "--json", *sorted(scene.frames.iterdir()))
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    docs = {Path(d["path"]).stem: d for d in map(json.loads, proc.stdout.splitlines())}
    assert {k: d["verdict"] for k, d in docs.items()} == {
        "a_good": "PASS",
        "b_ignored": "PASS",
        "c_inspected": "FAIL",
    }
    assert docs["b_ignored"]["defect_count"] == 0 and docs["b_ignored"]["defects"] == []
    found = docs["c_inspected"]["defects"]
    assert docs["c_inspected"]["defect_count"] >= 1 and found[0]["box"][0] >= SIZE_PX // 2 - 1
    assert found[0]["area_px"] == max(d["area_px"] for d in found)


def test_a_region_mask_of_another_size_is_refused_naming_the_file(scene: Scene, tmp_path: Path) -> None:
    small = tmp_path / "small_mask.png"
    cv2.imwrite(str(small), np.full((20, 30), 255, np.uint8))
    images = scene.frames
    proc = run_cli("gallery", "build", "--images", images, "--out", tmp_path / "g.gallery", "--config", scene.config,
                   "--region-mask", small)  # fmt: skip
    assert proc.returncode != EXIT_OK and not (tmp_path / "g.gallery").exists()
    assert (
        f"region mask {small}: 30x20 px, but the gallery's images are {SIZE_PX}x{SIZE_PX} px" in proc.stderr
    )


def test_the_daemon_publishes_the_same_verdicts_with_defect_regions_on_the_bus_and_in_opc_ua(
    scene: Scene, tmp_path: Path
) -> None:
    bus, opcua = tcp(free_port()), free_port()
    config = write_daemon_config(
        tmp_path / "inspector.toml",
        cameras=[{"name": CAMERA, "source": scene.frames, "fps": 2.0, "queue_size": 16}],
        worker={"gallery": scene.gallery},
        bus={"bind": bus},
        metrics=NO_METRICS,
        opcua={"enabled": True, "port": opcua, "allow_anonymous": True},
    )
    sub = Subscriber(bus)
    daemon = DaemonProcess(config)
    try:
        daemon.wait_event("daemon_ready")
        wait_until(lambda: len(sub.got.of(CAMERA)) >= 3, "a verdict for each of the three frames")
        last = asyncio.run(_last_result(opcua))
        assert daemon.terminate() == 0
    finally:
        sub.close()
        daemon.close()
    verdicts = {v.part_id: v for v in sub.got.of(CAMERA)}
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "a_good": "PASS",
        "b_ignored": "PASS",
        "c_inspected": "FAIL",
    }
    ignored, inspected = verdicts["b_ignored"], verdicts["c_inspected"]
    assert ignored.defect_count == 0 and ignored.defects == []
    assert inspected.defect_count is not None and inspected.defect_count >= 1 and inspected.defects
    assert inspected.defects[0].box[0] >= SIZE_PX // 2 - 1
    assert last == ("c_inspected", inspected.defect_count, inspected.defects[0].area_px)


async def _last_result(port: int) -> tuple[Any, ...]:
    async with client(port) as c:
        cam = await camera(c, CAMERA)

        async def arrived() -> bool:
            return bool(await read(c, cam, "LastResult", "PartId") == "c_inspected")

        await wait_for(arrived, "the last frame's result in OPC UA")
        values = [await read(c, cam, "LastResult", name) for name in ("DefectCount", "LargestDefectAreaPx")]
        return ("c_inspected", *values)
