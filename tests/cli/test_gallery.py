"""Tests for the gallery commands' traps: interrupted writes, calibration on gallery images, add, eval --gallery."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from inspector.cli.main import main
from inspector.core.names import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TARGET_MISSED
from inspector.demo.data import write_dataset
from inspector.demo.parts import DEFECT_TYPES
from inspector.model.build import list_images
from inspector.model.gallery import load_gallery
from inspector.model.preprocess import read_image
from tests.support import REPO_ROOT, run_cli

SIZE_PX = 128
N_TRAIN = 40
N_TEST_GOOD = 10
CONFIG_TOML = f"""
[model]
resize_px = {SIZE_PX}
crop_px = {SIZE_PX}
image_score = "map_max"
image_k = 4
pixel_k = 4

[runtime]
batch_size = 4
"""
INTERRUPT_TIMEOUT_S = 600.0  # the whole interrupted command, on a busy 2-core machine


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("traps_data")
    return write_dataset(
        root, "part", n_train=N_TRAIN, n_test_good=N_TEST_GOOD, n_test_per_defect=2, size_px=SIZE_PX, seed=5
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traps_config") / "small.toml"
    path.write_text(CONFIG_TOML)
    return path


@pytest.fixture(scope="module")
def gallery(data: Path, config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("traps_gallery") / "part.gallery"
    proc = run_cli("gallery", "build", "--images", data / "train" / "good", "--out", out, "--config", config)
    assert proc.returncode == EXIT_OK, proc.stderr
    return out


def _copy(gallery: Path, tmp_path: Path) -> tuple[Path, bytes]:
    copy = shutil.copyfile(gallery, tmp_path / "g.gallery")
    return copy, copy.read_bytes()


def _only_the_gallery_is_left(folder: Path, gallery: Path) -> None:
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [], "a staging file is left"
    assert gallery.is_file()


# The CLI as a terminal starts it: a suite started in the background (``cmd &``) hands its children SIGINT
# ignored, and Python then installs no KeyboardInterrupt handler; this puts Python's own handler back first.
CLI_WITH_TERMINAL_SIGINT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('inspector.cli', run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize("step", ["features", "calibration"])
def test_ctrl_c_during_a_build_over_an_existing_gallery_leaves_it_byte_identical_and_exits_130(
    gallery: Path, data: Path, config: Path, tmp_path: Path, step: str
) -> None:
    existing, before = _copy(gallery, tmp_path)
    # niced below the test, so that the signal lands while the step runs even on a busy machine
    cmd = ["nice", "-n", "19", sys.executable, "-c", CLI_WITH_TERMINAL_SIGINT, "gallery", "build"]
    proc = subprocess.Popen(
        [*cmd, "--images", str(data / "train" / "good"), "--out", str(existing), "--config", str(config)],
        cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # plain progress: the step's first line is printed as it starts
        seen.append(line)
        if line.startswith(f"{step}: "):
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=INTERRUPT_TIMEOUT_S)
    assert proc.returncode == EXIT_INTERRUPTED, "".join(seen) + err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "interrupted: inspector gallery"
    )
    assert existing.read_bytes() == before
    _only_the_gallery_is_left(tmp_path, existing)


def test_calibrating_on_gallery_images_is_refused_naming_them_and_writes_nothing(
    gallery: Path, data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy, before = _copy(gallery, tmp_path)
    normal = tmp_path / "normal"
    normal.mkdir()
    train = list_images(data / "train" / "good")
    for p in train[:2]:
        shutil.copyfile(p, normal / f"renamed_{p.name}")  # same bytes, another name
    image = read_image(train[2])
    cv2.imwrite(str(normal / "reencoded.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 0])  # same pixels
    assert (normal / "reencoded.png").read_bytes() != train[2].read_bytes()
    for p in list_images(data / "test" / "good")[:3]:
        shutil.copyfile(p, normal / p.name)
    argv = [
        "gallery",
        "calibrate",
        "--gallery",
        str(copy),
        "--normal-dir",
        str(normal),
        "--config",
        str(config),
    ]
    assert main(argv) == EXIT_FAILURE
    err = capsys.readouterr().err
    for p in train[:2]:
        assert f"{normal / f'renamed_{p.name}'} = gallery image {p.name} (same SHA-256)" in err
    assert copy.read_bytes() == before
    for p in normal.glob("renamed_*"):
        p.unlink()
    assert main(argv) == EXIT_FAILURE  # now only the re-encoded copy: found by its features
    err = capsys.readouterr().err
    assert f"{normal / 'reencoded.png'} = gallery image {train[2].name} (pooled-feature distance" in err
    assert copy.read_bytes() == before
    _only_the_gallery_is_left(tmp_path, copy)


def test_a_degenerate_calibration_is_refused_even_with_allow_overlap(
    gallery: Path, data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy, before = _copy(gallery, tmp_path)
    argv = ["gallery", "calibrate", "--gallery", str(copy), "--normal-dir", str(data / "train" / "good")]
    assert main([*argv, "--allow-overlap", "--config", str(config)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "calibration refused, nothing written" in err and "stage scales" in err
    assert "at or below the smallest normal score" in err
    assert copy.read_bytes() == before


def test_gallery_add_keeps_a_hold_out_calibration_and_redoes_it_with_the_folder(
    gallery: Path, data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy, _ = _copy(gallery, tmp_path)
    good = list_images(data / "test" / "good")
    holdout, more = tmp_path / "holdout", tmp_path / "more"
    for folder, images in ((holdout, good[:6]), (more, good[6:])):
        folder.mkdir()
        for p in images:
            shutil.copyfile(p, folder / p.name)
    calibrate = ["gallery", "calibrate", "--gallery", str(copy), "--normal-dir", str(holdout)]
    assert main([*calibrate, "--target-frr", "0.2", "--config", str(config)]) == EXIT_OK
    assert "WARNING: hold-out folder too small for the target: 6 normal images" in capsys.readouterr().out
    held = load_gallery(copy).manifest.calibration
    assert held is not None and held.method == "holdout"
    capsys.readouterr()
    assert main(["gallery", "add", "--gallery", str(copy), "--images", str(more)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "calibration kept: it was set on a hold-out folder (6 images" in out and "--normal-dir" in out
    grown = load_gallery(copy).manifest
    assert grown.image_count == N_TRAIN + len(good) - 6 and grown.calibration == held
    mirrored = tmp_path / "mirrored"
    mirrored.mkdir()
    for p in more.iterdir():
        cv2.imwrite(str(mirrored / p.name), cv2.flip(read_image(p), 1))  # new good parts
    add = ["gallery", "add", "--gallery", str(copy), "--images", str(mirrored), "--normal-dir", str(holdout)]
    assert main(add) == EXIT_OK
    redone = load_gallery(copy).manifest.calibration
    assert redone is not None and redone.method == "holdout" and redone.created_at >= held.created_at
    assert redone.normal_scores != held.normal_scores
    assert "re-calibrated (holdout" in capsys.readouterr().out


def test_eval_of_an_existing_gallery_says_whether_it_meets_its_target_and_exits_4_when_it_misses(
    gallery: Path, data: Path, config: Path, tmp_path: Path
) -> None:
    good = run_cli("eval", "--gallery", gallery, "--data", data, "--out", tmp_path / "ok", "--config", config)
    assert good.returncode == EXIT_OK, good.stdout + good.stderr
    assert good.stdout.startswith("part: gallery MEETS the 1.00% false-reject target: ")
    assert (
        (tmp_path / "ok" / "report.md").read_text().startswith("# Evaluation report\n\n**part: gallery MEETS")
    )
    assert not (tmp_path / "ok" / "galleries").exists(), "--gallery builds nothing"
    # the same gallery on a line whose "good" parts are the defective ones: most good parts are rejected
    wrong = tmp_path / "wrong" / "part"
    shutil.copytree(data / "test", wrong / "test")
    shutil.copytree(data / "ground_truth", wrong / "ground_truth")
    shutil.rmtree(wrong / "test" / "good")
    (wrong / "test" / "good").mkdir()
    for kind in DEFECT_TYPES:
        for p in list_images(data / "test" / kind):
            shutil.copyfile(p, wrong / "test" / "good" / f"{kind}_{p.name}")
    missed = run_cli(
        "eval", "--gallery", gallery, "--data", wrong, "--out", tmp_path / "bad", "--config", config
    )
    assert missed.returncode == EXIT_TARGET_MISSED, missed.stdout + missed.stderr
    first = missed.stdout.splitlines()[0]
    assert (
        first.startswith("part: gallery MISSES the 1.00% false-reject target: ")
        and "good parts rejected" in first
    )


def test_scoring_an_image_of_another_size_warns_naming_both_sizes_and_still_scores_it(
    gallery: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = read_image(list_images(data / "test" / "good")[0])
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), cv2.resize(image, (SIZE_PX * 2, SIZE_PX)))
    assert main(["score", "--gallery", str(gallery), str(wide), "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"warning: {wide}: frame size {SIZE_PX * 2}x{SIZE_PX} px does not match the gallery's images "
        f"({SIZE_PX}x{SIZE_PX} px, +/-10%): another camera, resolution or product?"
    )
    assert '"kind": "verdict"' in captured.out


def test_tune_sets_the_thresholds_from_labelled_parts_and_reports_the_defects(
    gallery: Path, data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy, _ = _copy(gallery, tmp_path)
    argv = ["gallery", "tune", "--gallery", str(copy), "--labelled", str(data), "--target-frr", "0.2"]
    assert main([*argv, "--config", str(config)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "tuned (labelled, empirical tail, 10 normal images)" in out and "caught by FAIL or REVIEW:" in out
    cal = load_gallery(copy).manifest.calibration
    assert cal is not None and cal.method == "labelled"
    assert main([*argv[:-1], "0.01", "--config", str(config)]) == EXIT_FAILURE
    assert "at least 100 are needed" in capsys.readouterr().err


def test_a_reteach_that_would_pass_a_confirmed_defect_is_refused_naming_it_and_writes_nothing(
    gallery: Path, data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy, before = _copy(gallery, tmp_path)
    review = tmp_path / "review"
    (review / "train" / "good").mkdir(parents=True)
    (review / "test" / "stain").mkdir(parents=True)
    stain = read_image(list_images(data / "test" / "stain")[0])
    cv2.imwrite(str(review / "test" / "stain" / "confirmed.png"), stain)
    mistake = (
        review / "train" / "good" / "judged_good_by_mistake.png"
    )  # the same part, judged good by mistake
    cv2.imwrite(str(mistake), stain, [cv2.IMWRITE_PNG_COMPRESSION, 0])  # other bytes, the same pixels
    argv = ["gallery", "add", "--gallery", str(copy), "--from-review", str(review), "--config", str(config)]
    assert main(argv) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "would pass 1 confirmed defect(s) it catches today" in err and "confirmed.png" in err
    assert copy.read_bytes() == before
    _only_the_gallery_is_left(tmp_path, copy)
