"""Tests for the command line: gallery build/calibrate/info and score, as a real subprocess and via main()."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector import __version__
from inspector.cli.main import build_parser, main
from inspector.config.calibration import CalibrationConfig
from inspector.core.names import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNREADABLE, EXIT_USAGE
from inspector.demo.data import write_dataset
from inspector.model.build import list_images
from inspector.model.engine import Inspector
from inspector.model.gallery import load_gallery, read_gallery_hash
from inspector.model.preprocess import read_image
from tests.support import SyntheticGallery, read_png, run_cli, runtime_config

SIZE_PX = 128
CROP_PX = 112
N_TRAIN = 10
RTOL = 1e-4
CONFIG_TOML = f"""
[model]
resize_px = {SIZE_PX}
crop_px = {CROP_PX}
image_score = "map_max"
image_k = 4
pixel_k = 4

[runtime]
batch_size = 4
"""
TEXT_LINE = re.compile(
    r"^(?P<path>\S+)\tscore=(?P<score>[\d.]+)\tthreshold=(?P<thr>[\d.]+)\t(?P<verdict>PASS|FAIL)"
    r"\tarea=(?P<area>\d+)px\tdefects=(?P<defects>\d+)(\tlargest=(?P<largest>\d+)px)?$"
)
DEFAULT = CalibrationConfig()
JSON_FIELDS = {"kind", "path", "score", "threshold", "verdict", "defect_area_px", "gallery"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_data")
    base = write_dataset(
        root, "part", n_train=N_TRAIN, n_test_good=3, n_test_per_defect=1, size_px=SIZE_PX, seed=8
    )
    flat = root / "flat"  # unique file names for the scoring tests
    flat.mkdir()
    for d in sorted((base / "test").iterdir()):
        for p in list_images(d):
            shutil.copyfile(p, flat / f"{d.name}_{p.name}")
    return base


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli_config") / "small.toml"
    path.write_text(CONFIG_TOML)
    return path


@pytest.fixture(scope="module")
def gallery(data: Path, config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli_gallery") / "part.safetensors"
    proc = run_cli("gallery", "build", "--images", data / "train" / "good", "--out", out, "--config", config)
    assert proc.returncode == EXIT_OK, proc.stderr
    hash_line = f"gallery {out}: built ({N_TRAIN} images), gallery_sha256 {read_gallery_hash(out)}"
    assert hash_line in proc.stdout.splitlines() and f"calibrated ({DEFAULT.leave_out}" in proc.stdout
    # not a terminal: plain progress lines, one per step at least, and nothing else
    steps = [line.split(":")[0] for line in proc.stderr.splitlines()]
    assert set(steps) == {"features", "calibration"}, proc.stderr
    return out


def _tests(data: Path) -> list[Path]:
    return list_images(data.parent / "flat")


def test_build_then_score_json_prints_one_object_per_image_with_the_engine_numbers(
    gallery: Path, data: Path, config: Path
) -> None:
    paths = _tests(data)
    proc = run_cli("score", "--gallery", gallery, *paths, "--json", "--config", config)
    assert proc.returncode == EXIT_OK, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["path"] for d in docs] == [str(p) for p in paths]
    cal = load_gallery(gallery).manifest.calibration
    assert cal is not None
    results = Inspector.from_gallery(gallery, runtime_config()).score([read_image(p) for p in paths])
    for d, r in zip(docs, results, strict=True):
        assert JSON_FIELDS <= set(d)
        assert d["threshold"] == pytest.approx(cal.image_threshold, abs=1e-6)
        assert d["score"] == pytest.approx(r.score, rel=RTOL)
        assert d["verdict"] in ("PASS", "FAIL")
        assert d["verdict"] == ("FAIL" if d["score"] > d["threshold"] else "PASS")
        assert isinstance(d["defect_area_px"], int) and abs(d["defect_area_px"] - r.defect_area_px) <= 2


def test_score_text_mode_prints_path_score_threshold_verdict_area(
    gallery: Path, data: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _tests(data)
    assert main(["score", "--gallery", str(gallery), *map(str, paths), "--config", str(config)]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(paths)
    for p, line in zip(paths, lines, strict=True):
        m = TEXT_LINE.match(line)
        assert m is not None, line
        assert m["path"] == str(p)
        assert (m["largest"] is None) == (m["defects"] == "0"), line  # the largest region's area when any
        assert (
            m["verdict"] == ("FAIL" if float(m["score"]) > float(m["thr"]) else "PASS")
            or m["score"] == m["thr"]
        )


def test_overlay_dir_gets_an_overlay_and_a_mask_png_per_image(
    gallery: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _tests(data)[:3]
    out_dir = tmp_path / "overlays"
    argv = ["score", "--gallery", str(gallery), *map(str, paths), "--json", "--overlay-dir", str(out_dir)]
    assert main(argv) == EXIT_OK
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(f.name for f in out_dir.iterdir()) == sorted(
        f"{p.stem}_{kind}.png" for p in paths for kind in ("overlay", "mask")
    )
    offset = (SIZE_PX - CROP_PX) // 2
    for p, d in zip(paths, docs, strict=True):
        # both in frame pixels: the whole frame, what was inspected framed, the mask where the part is
        assert d["inspected_px"] == [offset, offset, offset + CROP_PX, offset + CROP_PX]
        mask = read_png(out_dir / f"{p.stem}_mask.png")
        assert mask.shape == (SIZE_PX, SIZE_PX) and set(np.unique(mask).tolist()) <= {0, 255}
        assert d["defect_area_frame_px"] == d["defect_area_px"]  # the crop is not scaled: 1 px each
        assert int(np.count_nonzero(mask)) == d["defect_area_frame_px"]
        assert read_png(out_dir / f"{p.stem}_overlay.png").shape == (SIZE_PX, SIZE_PX, 3)


def test_unreadable_images_are_reported_per_file_and_the_rest_scored_with_exit_3(
    gallery: Path, data: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\xff\xd8\xff not really a jpeg")
    missing = tmp_path / "missing.png"
    good = _tests(data)[:2]
    proc = run_cli("score", "--gallery", gallery, good[0], garbage, missing, good[1], "--json")
    assert proc.returncode == EXIT_UNREADABLE, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["path"] for d in docs] == [str(p) for p in (good[0], garbage, missing, good[1])]  # input order
    by_path = {d["path"]: d for d in docs}
    for p in (garbage, missing):
        record = by_path[str(p)]
        assert record["kind"] == "unreadable" and "verdict" not in record and str(p) in record["error"]
    for p in good:
        assert by_path[str(p)]["kind"] == "verdict" and by_path[str(p)]["verdict"] in ("PASS", "FAIL")
        assert JSON_FIELDS <= set(by_path[str(p)])


def test_corrupt_gallery_exits_1_naming_the_file(
    gallery: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    raw = bytearray(gallery.read_bytes())
    raw[-100] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    assert main(["score", "--gallery", str(corrupt), str(_tests(data)[0])]) == EXIT_FAILURE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err.strip()
        == f"error: gallery {corrupt}: content hash mismatch (file is corrupt or was modified)"
    )


def test_missing_gallery_and_truncated_gallery_exit_1_naming_the_file(
    gallery: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "short.safetensors"
    truncated.write_bytes(gallery.read_bytes()[:5000])
    for path, reason in ((tmp_path / "none.safetensors", "file not found"), (truncated, "truncated")):
        assert main(["score", "--gallery", str(path), str(_tests(data)[0])]) == EXIT_FAILURE
        err = capsys.readouterr().err
        assert str(path) in err and reason in err


def test_gallery_info_prints_the_manifest(
    gallery: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gallery", "info", str(gallery)]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    loaded = load_gallery(gallery)
    cal = loaded.manifest.calibration
    assert cal is not None
    full = loaded.manifest.model_dump(mode="json")
    summary = {"n": N_TRAIN, "min": min(cal.normal_scores), "max": max(cal.normal_scores)}
    assert summary.items() <= info["calibration"]["normal_scores"].items()
    assert info["inspected"].startswith(
        "x 8-120, y 8-120 of 128x128 (77% of the frame; never inspected: 8 px"
    )
    assert {
        k: v for k, v in info.items() if k not in ("calibration", "sources", "gallery_sha256", "inspected")
    } == {k: v for k, v in full.items() if k not in ("calibration", "sources")}
    assert info["gallery_sha256"] == loaded.sha256 and info["sources"].startswith(f"{N_TRAIN} files")
    assert main(["gallery", "info", str(gallery), "--scores"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["calibration"] == full["calibration"]
    assert info["backbone"] == "efficientnet_lite0" and info["image_count"] == N_TRAIN
    assert info["preprocessing"]["crop_px"] == CROP_PX and info["calibration"]["method"] == DEFAULT.leave_out
    assert main(["gallery", "info", str(gallery), "--sources"]) == EXIT_OK
    sources = json.loads(capsys.readouterr().out)["sources"]
    assert [s["name"] for s in sources] == [p.name for p in list_images(data / "train" / "good")]


def test_calibrate_with_a_normal_folder_and_target_rate_is_recorded(
    gallery: Path, data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = shutil.copyfile(gallery, tmp_path / "g.safetensors")
    normal = data / "test" / "good"
    argv = [
        "gallery",
        "calibrate",
        "--gallery",
        str(copy),
        "--normal-dir",
        str(normal),
        "--target-frr",
        "0.2",
    ]
    assert main([*argv, "--config", str(config)]) == EXIT_OK
    assert "calibrated (holdout, empirical tail, 3 normal images)" in capsys.readouterr().out
    cal = load_gallery(copy).manifest.calibration
    assert cal is not None and (cal.method, cal.n_images, cal.target_false_reject_rate) == ("holdout", 3, 0.2)


def test_float16_uncalibrated_build_is_refused_for_scoring(
    data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g16.safetensors"
    images = tmp_path / "few"
    shutil.copytree(data / "train" / "good", images)
    for extra in sorted(images.iterdir())[3:]:
        extra.unlink()
    argv = ["gallery", "build", "--images", str(images), "--out", str(out), "--float16", "--no-calibrate"]
    assert main([*argv, "--config", str(config)]) == EXIT_OK
    m = load_gallery(out).manifest
    assert (m.storage_dtype, m.calibration, m.image_count) == ("float16", None, 3)
    capsys.readouterr()
    assert main(["score", "--gallery", str(out), str(_tests(data)[0])]) == EXIT_FAILURE
    assert "not calibrated" in capsys.readouterr().err


def test_build_with_an_unreadable_image_exits_1_naming_it(
    data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "good"
    images.mkdir()
    for p in list_images(data / "train" / "good")[:2]:
        shutil.copyfile(p, images / p.name)
    bad = images / "zz_bad.png"
    bad.write_bytes(b"not a png")
    argv = ["gallery", "build", "--images", str(images), "--out", str(tmp_path / "g.safetensors")]
    assert main([*argv, "--config", str(config)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert str(bad) in err and "not a decodable image" in err
    assert not (tmp_path / "g.safetensors").exists()


def test_build_from_a_folder_without_images_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["gallery", "build", "--images", str(tmp_path), "--out", str(tmp_path / "g.safetensors")]
    assert main(argv) == EXIT_FAILURE
    assert f"{tmp_path}: no images" in capsys.readouterr().err


def test_invalid_config_exits_78_naming_the_field(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nresize_px = 64\ncrop_px = 112\nimage_k = 0\n")
    argv = [
        "gallery",
        "build",
        "--images",
        str(data / "train" / "good"),
        "--out",
        str(tmp_path / "g.safetensors"),
    ]
    assert main([*argv, "--config", str(bad)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{bad}: model.image_k" in err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["score", "--json"])
    assert info.value.code == 2


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == EXIT_OK and capsys.readouterr().out.strip() == f"inspector {__version__}"


def _parsers(
    parser: argparse.ArgumentParser, path: str = "inspector"
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_argument_of_every_command_has_help_text() -> None:
    missing = [
        f"{path}: {action.option_strings or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert not missing, missing
    commands = {path for path, _ in _parsers(build_parser())}
    assert {"inspector run", "inspector tail", "inspector gallery build", "inspector proxy"} <= commands


def test_gallery_add_prints_the_growth_the_refused_duplicates_and_the_new_calibration(
    gallery: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = shutil.copyfile(gallery, tmp_path / "g.safetensors")
    new = tmp_path / "new"
    shutil.copytree(data / "test" / "good", new)
    duplicate = list_images(data / "train" / "good")[0]
    shutil.copyfile(duplicate, new / "again.png")
    assert main(["gallery", "add", "--gallery", str(copy), "--images", str(new)]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"refused {new / 'again.png'}: already in the gallery as {duplicate.name} (same SHA-256)"
    assert out[1] == (
        f"gallery {copy}: grown ({N_TRAIN} -> {N_TRAIN + 3} images, 3 added, 1 duplicates refused), "
        f"gallery_sha256 {read_gallery_hash(copy)}"
    )
    assert (
        out[2].startswith(f"re-calibrated ({DEFAULT.leave_out}") and f"{N_TRAIN + 3} normal images" in out[2]
    )
    assert load_gallery(copy).manifest.image_count == N_TRAIN + 3


def test_gallery_calibrate_rewrites_a_version_1_gallery_as_version_2(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    from inspector.model.gallery import read_manifest

    legacy = tmp_path / "old.safetensors"
    doc = read_manifest(synthetic_gallery.path).model_dump(mode="json")
    doc["format_version"] = 1
    doc["calibration"] = {k: v for k, v in doc["calibration"].items() if not k.startswith("normal_")}
    save_file(
        load_file(str(synthetic_gallery.path)), str(legacy), metadata={"inspector_manifest": json.dumps(doc)}
    )
    assert main(["gallery", "info", str(legacy)]) == EXIT_FAILURE
    assert "format version 1 has no hash over its manifest" in capsys.readouterr().err
    assert main(["gallery", "calibrate", "--gallery", str(legacy)]) == EXIT_OK
    assert "rewritten as format version 2" in capsys.readouterr().out
    migrated = load_gallery(legacy)
    assert migrated.manifest.format_version == 2 and migrated.manifest.calibration is not None
    assert migrated.manifest.calibration.inconsistencies() == []


def test_calibrate_prints_what_the_images_support_warns_when_too_few_and_records_the_chosen_method(
    gallery: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = shutil.copyfile(gallery, tmp_path / "g.safetensors")
    argv = ["gallery", "calibrate", "--gallery", str(copy), "--leave-out", "k_fold", "--tail", "pareto"]
    assert main([*argv, "--config", str(config)]) == EXIT_OK
    out = capsys.readouterr().out
    cal = load_gallery(copy).manifest.calibration
    assert cal is not None and (cal.method, cal.tail, cal.folds) == ("k_fold", "pareto", DEFAULT.folds)
    assert f"calibrated (k_fold, {DEFAULT.folds} folds, pareto tail, {N_TRAIN} normal images)" in out
    assert cal.false_reject_upper_bound is not None and cal.normal_above_threshold is not None
    assert f"is at most {cal.false_reject_upper_bound:.2%}" in out
    assert f"{cal.normal_above_threshold} of {N_TRAIN} normal images score above it" in out
    assert "needs 299 normal images with no failure" in out
    assert f"WARNING: gallery too small for the target: {N_TRAIN} normal images cannot verify" in out


def test_inspector_alone_lists_the_commands_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: inspector") and all(f"    {c} " in err for c in ("gallery", "score", "run"))


def test_score_takes_a_folder_as_its_images_and_names_a_folder_without_any(
    gallery: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = data.parent / "flat"
    assert main(["score", "--gallery", str(gallery), str(folder), "--json"]) == EXIT_OK
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["path"] for d in docs] == [str(p) for p in list_images(folder)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["score", "--gallery", str(gallery), str(empty)]) == EXIT_UNREADABLE
    assert f"{empty}\tUNREADABLE\t{empty}: a folder without images" in capsys.readouterr().out


def test_build_says_which_subfolders_it_does_not_read_and_no_calibrate_never_replaces_a_gallery(
    gallery: Path, data: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "good"
    shutil.copytree(data / "train" / "good", images)
    (images / "more").mkdir()
    for p in list_images(data / "test" / "good")[:2]:
        shutil.copyfile(p, images / "more" / p.name)
    out = tmp_path / "g.safetensors"
    argv = ["gallery", "build", "--images", str(images), "--out", str(out), "--config", str(config)]
    assert main([*argv, "--no-calibrate"]) == EXIT_OK
    assert f"note: {N_TRAIN} images in {images} used; subfolders are not read: {images / 'more'} (2)" in (
        capsys.readouterr().out
    )
    before = out.read_bytes()
    assert main([*argv, "--no-calibrate"]) == EXIT_FAILURE
    assert "--no-calibrate would replace it with a gallery that cannot serve" in capsys.readouterr().err
    assert out.read_bytes() == before
