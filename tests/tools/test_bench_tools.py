"""Smoke test of tools/bench_spade.py: a tiny real run whose printed tables have the expected rows."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest
import torch

from tests.support import REPO_ROOT

REPO = REPO_ROOT
TOOL = REPO / "tools" / "bench_spade.py"
BACKBONES = ("efficientnet_lite0", "wide_resnet50_2")
BATCHES = (1, 2)
KS = (1, 3)
RUNTIMES = ("torch", "openvino")
KERNELS = ("torch", "fused")
TIMEOUT_S = 120
ROUNDING_MS = 0.05  # the table prints two decimals; five stage roundings add up to at most this


def section(lines: list[str], title_prefix: str) -> list[list[str]]:
    """Split rows of the table whose title line starts with title_prefix (header skipped, ends at a blank)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title_prefix))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


@pytest.fixture(scope="module")
def output() -> list[str]:
    args = [
        sys.executable,
        str(TOOL),
        "--quick",
        "--device",
        "cpu",
        "--backbones",
        ",".join(BACKBONES),
        "--batches",
        ",".join(map(str, BATCHES)),
        "--ks",
        ",".join(map(str, KS)),
    ]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_timing_table_has_one_consistent_row_per_backbone_runtime_batch_k_and_kernel(
    output: list[str],
) -> None:
    rows = section(output, "== ms per image")
    keys = [(r[0], r[1], int(r[4]), int(r[5]), r[2]) for r in rows]
    assert keys == list(itertools.product(BACKBONES, RUNTIMES, BATCHES, KS, KERNELS))
    for r in rows:
        assert r[3] == ("real" if r[0] == "efficientnet_lite0" else "random")
        stages = [float(v) for v in r[7:12]]
        total, floor, ratio = float(r[12]), float(r[13]), float(r[14])
        assert all(v >= 0.0 for v in stages) and total > 0.0 and floor > 0.0
        assert total == pytest.approx(sum(stages), abs=ROUNDING_MS)
        assert ratio == pytest.approx(total / floor, rel=0.02)


def test_floor_table_scales_pixel_flops_with_k_and_keeps_backbone_flops_fixed(output: list[str]) -> None:
    table = section(output, "== arithmetic")
    assert len(table) == len(BACKBONES) * len(RUNTIMES) * len(BATCHES) * len(KS) * len(KERNELS)
    rows = {
        (r[0], int(r[3]), int(r[4])): [float(v) for v in r[5:]] for r in table if r[1:3] == ["torch", "torch"]
    }
    assert set(rows) == set(itertools.product(BACKBONES, BATCHES, KS))
    for name in BACKBONES:
        bb = {rows[(name, b, k)][0] for b in BATCHES for k in KS}
        assert len(bb) == 1 and bb.pop() > 0.0
        small, large = rows[(name, 1, KS[0])][2], rows[(name, 1, KS[1])][2]
        assert large / small == pytest.approx(KS[1] / KS[0], rel=0.05)
    assert rows[("wide_resnet50_2", 1, 1)][0] > rows[("efficientnet_lite0", 1, 1)][0]


def test_header_reports_a_positive_gemm_rate_and_the_torch_version(output: list[str]) -> None:
    text = "\n".join(output)
    match = re.search(r"floor uses the better, ([0-9.]+) GFLOP/s", text)
    assert match is not None and float(match.group(1)) > 0.0
    assert f"torch {torch.__version__}" in text


def test_side_by_side_table_gives_each_kernel_and_runtime_its_floor_ratio_and_the_speed_ups(
    output: list[str],
) -> None:
    text = "\n".join(output)
    assert "pixel kernels torch, fused; backbone runtimes torch, openvino; CPU " in text
    rows = section(output, "== side by side")
    assert [(r[0], int(r[1]), int(r[2])) for r in rows] == list(itertools.product(BACKBONES, BATCHES, KS))
    for r in rows:
        cells = re.findall(r"([0-9.]+) \(\s*([0-9.]+)\)", " ".join(r[3:]))
        (pix_t, _), (pix_f, _), (bb_t, _), (bb_o, _), (before, _), (after, _) = [
            (float(ms), float(ratio)) for ms, ratio in cells
        ]
        pix_x, bb_x, frame_x, fps = (float(v) for v in r[-4:])
        assert pix_x == pytest.approx(pix_t / pix_f, rel=0.05, abs=0.02)
        assert bb_x == pytest.approx(bb_t / bb_o, rel=0.05, abs=0.02)
        assert frame_x == pytest.approx(before / after, rel=0.05, abs=0.02)
        assert fps == pytest.approx(1000.0 / after, rel=0.05, abs=0.2)


def _quick_rows(*extra: str) -> tuple[str, list[list[str]]]:
    args = [sys.executable, str(TOOL), "--quick", "--device", "cpu", "--backbones", BACKBONES[0], *extra]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    return done.stdout, section(lines, "== ms per image")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            ("--pixel-search", "window", "--window-cells", "1", "--float16"),
            "banks in float16; pixel search window",
        ),
        (("--reference",), "with spade.stage_maps (the reference path)"),
    ],
)
def test_search_options_print_every_row_with_its_floor_ratio_and_say_what_ran(
    extra: tuple[str, ...], says: str
) -> None:
    text, rows = _quick_rows(*extra)
    assert says in text
    assert [(r[1], int(r[4]), int(r[5])) for r in rows] == list(itertools.product(RUNTIMES, BATCHES, KS))
    assert {r[2] for r in rows} == {"torch"}  # the fused kernel does not run the window or reference search
    for r in rows:
        assert float(r[14]) == pytest.approx(float(r[12]) / float(r[13]), rel=0.02)


def test_bench_backbone_prints_a_floor_ratio_and_a_factor_for_every_variant() -> None:
    tool = REPO / "tools" / "bench_backbone.py"
    args = [sys.executable, str(tool), "--quick"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(BACKBONES[0])]
    assert len(rows) >= 4 and {int(r[1]) for r in rows} == {1, 2}
    for r in rows:
        ms, floor, ratio = float(r[-4]), float(r[-3]), float(r[-2])
        assert ms > 0.0 and floor > 0.0
        assert ratio == pytest.approx(ms / floor, rel=0.05, abs=0.01)
    assert {float(r[-1]) for r in rows if "contiguous" == r[2] and len(r) == 7} == {1.0}
    assert {int(r[1]) for r in rows if r[2] == "openvino"} == {1, 2}  # OpenVINO's runtime at each batch


def test_bench_gpu_smoke_run_on_cpu_prints_rates_latencies_and_floor_ratios() -> None:
    tool = REPO / "tools" / "bench_gpu.py"
    args = [sys.executable, str(tool), "--device", "cpu", "--quick"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines if line.startswith(BACKBONES[0]) and "K=" not in line]
    assert [(int(r[1]), int(r[2])) for r in rows] == [(3, 1), (3, 2)]
    assert all(float(r[3]) > 0.0 and float(r[4]) > 0.0 and float(r[6]) > 0.0 for r in rows)
    assert "CUDA only" in done.stdout
