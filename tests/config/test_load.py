"""Tests for inspector.config's daemon sections, run checks, the example file and ``inspector check-config``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from inspector.cli.main import main
from inspector.config.genicam import GenicamConfig
from inspector.config.load import ConfigError, load_config, load_run_config, run_problems
from inspector.config.root import InspectorConfig
from inspector.core.names import EXIT_CONFIG
from tests.support import REPO_ROOT, SyntheticGallery

EXAMPLE = REPO_ROOT / "config" / "inspector.example.toml"


def write(tmp_path: Path, text: str, name: str = "inspector.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_run_config(path)
    return info.value.problems


GALLERY_SECTIONS = {"model", "calibration"}  # recorded by galleries: shown commented out in a daemon config
OPTIONAL = {
    "runtime": {"weights", "batch_size", "openvino_cache_dir"},
    "worker": {"gallery"},
    "archive": {"directory"},
    "parts": {"url", "password_file", "spool_dir"},
    "review": {"users_file", "export_dir"},
    "security": {"curve_server_secret_key"},
    "opcua": {"users_file", "certificate", "private_key", "application_uri", "pki_dir"},
    "mqtt": {"client_id", "username", "password_file", "tls_ca_file", "tls_certificate", "tls_private_key"},
}  # commented out: examples of values, or offline-only


def test_example_file_validates_and_sets_every_daemon_field_and_shows_the_gallery_sections() -> None:
    config = load_config(EXAMPLE)
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    text = EXAMPLE.read_text(encoding="utf-8")
    assert [c.name for c in config.cameras] == ["line1", "line2"]

    def missing(section: dict[str, Any], model: type[BaseModel], optional: set[str]) -> set[str]:
        return set(model.model_fields) - set(section) - optional

    root_fields = set(InspectorConfig.model_fields)
    assert root_fields - set(data) == GALLERY_SECTIONS, "a root field or section is missing from the example"
    for name in root_fields:
        annotation = InspectorConfig.model_fields[name].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        if name in GALLERY_SECTIONS:
            assert f"# [{name}]" in text
            shown = {f for f in annotation.model_fields if f"\n# {f} = " in text}
            assert shown == set(annotation.model_fields), (
                f"[{name}] does not show {set(annotation.model_fields) - shown}"
            )
            assert annotation.model_validate({}) == getattr(config, name)
        else:
            # Optional values appear as commented-out lines; every other field is set explicitly.
            assert missing(data[name], annotation, OPTIONAL.get(name, set())) == set(), (
                f"[{name}] is incomplete"
            )
    camera_model = type(config.cameras[0])
    assert missing(data["cameras"][0], camera_model, {"fps", "gallery", "genicam"}) == set()
    shown = {f for f in GenicamConfig.model_fields if f"\n# {f} = " in text}
    assert shown == set(GenicamConfig.model_fields), (
        f"[cameras.genicam] does not show {set(GenicamConfig.model_fields) - shown}"
    )
    assert [p.name for p in config.products] == ["flange_a", "flange_b"]
    assert [config.product_for(c) for c in config.cameras] == ["flange_a", "flange_b"]
    assert "# fps = " in text and "# gallery = " in text and "# weights = " in text


def test_example_file_comments_every_field() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        is_setting = "=" in line and not line.startswith(("#", "[")) and line.strip()
        if is_setting:
            assert lines[index - 1].startswith("#"), f"line {index + 1} {line!r} has no comment above it"


def test_duplicate_camera_names_are_rejected_naming_both_entries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[cameras]]\nname = "a"\nsource = "0"\n[[cameras]]\nname = "b"\nsource = "1"\n'
        '[[cameras]]\nname = "a"\nsource = "2"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith("cameras:") and "cameras.2.name" in line and "cameras.0.name" in line


def test_camera_name_that_cannot_be_a_topic_is_rejected_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, '[[cameras]]\nname = "line.1"\nsource = "0"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith("cameras.0.name: ") and "'line.1' cannot be a bus topic" in line


def test_each_bad_field_is_named_on_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'shutdown_timeout_s = -1\n[[cameras]]\nname = "a"\nsource = "0"\n[[cameras]]\nname = "b"\n'
        'source = "1"\nfps = 0\n[batching]\nmax_batch = 0\n[bus]\nlinger_ms = -5\n[metrics]\nport = 70000\n'
        "[worker]\nstall_timeout_s = 0.5\n",
    )
    problems = problems_of(path)
    fields = sorted(p.split(":")[0] for p in problems)
    assert fields == [
        "batching.max_batch",
        "bus.linger_ms",
        "cameras.1.fps",
        "metrics.port",
        "shutdown_timeout_s",
        "worker.stall_timeout_s",
    ]


def test_environment_overrides_nested_fields_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[bus]\nbind = "tcp://127.0.0.1:6000"\nsndhwm = 7\n[batching]\nmax_batch = 2\n')
    monkeypatch.setenv("INSPECTOR_BUS__BIND", "tcp://127.0.0.1:6001")
    monkeypatch.setenv("INSPECTOR_SHUTDOWN_TIMEOUT_S", "3.5")
    config = load_config(path)
    assert config.bus.bind == "tcp://127.0.0.1:6001"
    assert config.bus.sndhwm == 7  # the rest of the section still comes from the file
    assert config.shutdown_timeout_s == 3.5
    assert config.batching.max_batch == 2


def test_run_needs_a_camera(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, "[batching]\nmax_batch = 2\n")) == [
        "cameras: at least one [[cameras]] entry is required to run the daemon"
    ]


def test_run_needs_a_product_for_every_camera_and_every_gallery_file(tmp_path: Path) -> None:
    video = write(tmp_path, "", "clip.avi")
    path = write(
        tmp_path,
        f'[[cameras]]\nname = "a"\nsource = "{video}"\n'
        f'[[cameras]]\nname = "b"\nsource = "0"\ngallery = "{tmp_path / "b.safetensors"}"\n'
        f'[[products]]\nname = "unused"\ngallery = "{tmp_path / "u.safetensors"}"\n',
    )
    problems = problems_of(path)
    assert (
        problems[0] == "cameras.0.product: camera a has no product (set product, gallery or worker.gallery)"
    )
    assert (
        problems[1].startswith("products.0.gallery: gallery file ")
        and "(product unused) not found" in problems[1]
    )
    assert (
        problems[2].startswith("cameras.1.gallery: gallery file ") and "(product b) not found" in problems[2]
    )
    assert len(problems) == 3


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[[products]]\nname = "a"\ngallery = "/g/a.g"\n[[products]]\nname = "a"\ngallery = "/g/b.g"\n',
            "products: products.1.name 'a' duplicates products.0.name",
        ),
        (
            '[[products]]\nname = "a"\ngallery = "/g/a.g"\n[[cameras]]\nname = "c"\nsource = "1"\ngallery = "/o/a.g"\n',
            "cameras: cameras.0.gallery /o/a.g would be product 'a', already /g/a.g: name it in [[products]]",
        ),
        (
            '[[products]]\nname = "a"\ngallery = "/g/a.g"\n[[cameras]]\nname = "c"\nsource = "0"\nproduct = "b"\n',
            "cameras: cameras.0.product 'b' is not a product (known: a)",
        ),
    ],
    ids=["duplicate_product", "implicit_product_collides", "unknown_product"],
)
def test_products_and_cameras_are_checked_against_each_other(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.problems == [problem]


def test_a_camera_with_both_a_product_and_a_gallery_is_refused(tmp_path: Path) -> None:
    text = '[[products]]\nname = "a"\ngallery = "/g/a.g"\n[[cameras]]\nname = "c"\nsource = "0"\nproduct = "a"\ngallery = "/g/x.g"\n'
    with pytest.raises(ConfigError, match="set gallery or product, not both"):
        load_config(write(tmp_path, text))


def test_run_rejects_a_missing_video_file(tmp_path: Path) -> None:
    gallery = write(tmp_path, "x", "g.safetensors")
    path = write(
        tmp_path,
        f'[worker]\ngallery = "{gallery}"\n[[cameras]]\nname = "a"\nsource = "{tmp_path / "nope.avi"}"\n',
    )
    (problem,) = problems_of(path)
    assert problem.startswith("cameras.0.source: file ") and "nope.avi" in problem


def test_per_camera_gallery_overrides_the_worker_gallery(tmp_path: Path) -> None:
    shared, own = write(tmp_path, "x", "shared.g"), write(tmp_path, "x", "own.g")
    path = write(
        tmp_path,
        f'[worker]\ngallery = "{shared}"\n[[cameras]]\nname = "a"\nsource = "0"\n'
        f'[[cameras]]\nname = "b"\nsource = "1"\ngallery = "{own}"\n',
    )
    config = load_run_config(path)
    assert run_problems(config) == []
    assert [config.gallery_for(c) for c in config.cameras] == [shared, own]


def test_check_config_exits_78_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[[cameras]]\nname = "a"\nsource = "0"\nfps = -2\n[bus]\nsndhwm = 0\n')
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{path}: cameras.0.fps: Input should be greater than 0",
        f"{path}: bus.sndhwm: Input should be greater than or equal to 1",
    ]


def test_check_config_accepts_a_runnable_file(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, f'[worker]\ngallery = "{synthetic_gallery.path}"\n[[cameras]]\nname = "a"\nsource = "0"\n'
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK") and "a (device 0, free_run, product gallery)" in out
    assert f"products: gallery = {synthetic_gallery.path}" in out
    assert "archive: off (no directory, no $STATE_DIRECTORY)  results: off  liveview: off" in out


def test_check_config_refuses_a_model_key_the_gallery_decides_otherwise(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = synthetic_gallery.path
    crop = synthetic_gallery.model.crop_px
    text = f'[model]\ncrop_px = {crop + 32}\nresize_px = 512\n[worker]\ngallery = "{gallery}"\n'
    path = write(tmp_path, text + '[[cameras]]\nname = "a"\nsource = "0"\n')
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(
        f"{path}: model.crop_px: {crop + 32} here, but gallery {gallery} was built with {crop}"
    )
    assert err[1].startswith(f"{path}: model.resize_px: 512 here")


def test_check_config_accepts_model_keys_that_agree_with_the_gallery(
    tmp_path: Path, synthetic_gallery: SyntheticGallery
) -> None:
    text = f'[model]\ncrop_px = {synthetic_gallery.model.crop_px}\n[worker]\ngallery = "{synthetic_gallery.path}"\n'
    assert main(["check-config", str(write(tmp_path, text + '[[cameras]]\nname = "a"\nsource = "0"\n'))]) == 0


def test_check_config_refuses_a_calibration_rate_the_gallery_was_not_calibrated_at(
    tmp_path: Path, synthetic_gallery: SyntheticGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    text = f'[calibration]\ntarget_false_reject_rate = 0.2\n[worker]\ngallery = "{synthetic_gallery.path}"\n'
    path = write(tmp_path, text + '[[cameras]]\nname = "a"\nsource = "0"\n')
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{path}: calibration.target_false_reject_rate: 0.2 here, but gallery ")


def test_check_config_names_a_gallery_file_that_is_not_a_gallery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = write(tmp_path, "x", "g.safetensors")
    path = write(tmp_path, f'[worker]\ngallery = "{gallery}"\n[[cameras]]\nname = "a"\nsource = "0"\n')
    assert main(["check-config", str(path)]) == EXIT_CONFIG
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{path}: worker.gallery: gallery {gallery}: truncated file")


def test_a_run_time_key_under_model_is_refused_naming_its_new_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[model]\ndevice = "cpu"\nweights_path = "/w.pth"\n'))
    (line,) = info.value.problems
    assert line.startswith("model: ") and "device -> runtime.device" in line
    assert "weights_path -> runtime.weights.<backbone>" in line


def test_runtime_weights_are_per_backbone_and_unknown_backbones_are_named(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[runtime.weights]\nresnet18 = "/w/r18.pth"\n'))
    assert config.runtime.weights_for("resnet18") == Path("/w/r18.pth")
    assert config.runtime.weights_for("efficientnet_lite0") is None
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[runtime.weights]\nvgg16 = "/w/v.pth"\n'))
    assert info.value.problems[0].startswith("runtime.weights.vgg16.[key]: ")


def test_an_unknown_inspector_environment_section_is_an_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[[cameras]]\nname = "a"\nsource = "0"\n')
    monkeypatch.setenv("INSPECTOR_OPCUA_PASSWORD", "x")  # not a setting, and documented as such
    monkeypatch.setenv("INSPECTOR_LIVEVEIW__PORT", "9200")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.lines
    assert line.startswith("INSPECTOR_LIVEVEIW__PORT: 'liveveiw' is not a section") and "liveview" in line
    monkeypatch.delenv("INSPECTOR_LIVEVEIW__PORT")
    monkeypatch.setenv("INSPECTOR_LIVEVIEW__PROT", "9200")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.lines[0].startswith("INSPECTOR_LIVEVIEW__PROT: 'prot' is not a field of [liveview]")
    monkeypatch.delenv("INSPECTOR_LIVEVIEW__PROT")
    monkeypatch.setenv("INSPECTOR_LIVEVIEW__PORT", "9200")
    assert load_config(path).liveview.port == 9200


def test_a_bad_environment_value_is_blamed_on_its_variable_not_on_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[[cameras]]\nname = "a"\nsource = "0"\nfps = -1\n')
    monkeypatch.setenv("INSPECTOR_LIVEVIEW__PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert sorted(info.value.lines) == sorted(
        [
            f"{path}: cameras.0.fps: Input should be greater than 0",
            (
                "INSPECTOR_LIVEVIEW__PORT: liveview.port: Input should be a valid integer, unable to parse string "
                "as an integer"
            ),
        ]
    )


@pytest.mark.parametrize("value", ['"yes"', "1", '"true"'])
def test_a_true_false_setting_must_be_a_toml_boolean(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path, f'[[cameras]]\nname = "a"\nsource = "0"\nloop = {value}\n[archive]\nenabled = "no"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"cameras.0.loop: must be true or false (a TOML boolean), got {tomllib.loads('v = ' + value)['v']!r}",
        "archive.enabled: must be true or false (a TOML boolean), got 'no'",
    ]
    ok = write(tmp_path, '[[cameras]]\nname = "a"\nsource = "0"\nloop = true\n', "ok.toml")
    assert load_config(ok).cameras[0].loop is True
    # the environment holds only strings: there "false" is how a boolean is written
    monkeypatch.setenv("INSPECTOR_ARCHIVE__ENABLED", "false")
    assert load_config(ok).archive.enabled is False


@pytest.mark.parametrize(
    ("tables", "fields"),
    [
        ({"bus": {"bind": "tcp://0.0.0.0:5556"}}, ["bus.bind"]),
        ({"bus": {"bind": "tcp://*:5556"}, "control": {"enabled": True, "bind": "tcp://eth0:5561"}},
         ["bus.bind", "control.bind"]),
        ({"bus": {"bind": "tcp://127.0.0.2:5556"}, "control": {"enabled": True, "bind": "ipc:///run/c"}}, []),
        ({"bus": {"bind": "tcp://[::1]:5556"}, "control": {"enabled": False, "bind": "tcp://0.0.0.0:1"}}, []),
        ({"bus": {"bind": "tcp://0.0.0.0:5556"}, "security": {"allow_plaintext_network": True}}, []),
    ],
)  # fmt: skip
def test_sockets_off_loopback_without_curve_are_refused_unless_allowed_naming_each_field(
    tables: dict[str, dict[str, Any]], fields: list[str]
) -> None:
    config = InspectorConfig.model_validate({"cameras": [{"name": "c", "source": "0"}], **tables})
    problems = [p for p in run_problems(config) if "CURVE" in p]
    assert [p.split(":", 1)[0] for p in problems] == fields
    assert all("allow_plaintext_network" in p for p in problems)
