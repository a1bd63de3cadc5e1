"""Emulated ARM64 CPUs (issue 26): the pieces without the emulator, and, marked slow, ``mobilekit
arm-setup`` from nothing, ``parity --arm`` of RetinaFace fp32 + int8 at 128 and an instruction count
that repeats exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mobilekit.cli import main
from mobilekit.converters.arm_emulation import compare_with_x86, cpuinfo_text
from mobilekit.converters.arm_setup import _copy_sources_with_deb_src, default_cache

ARM_CPU = "cortex-a53"  # the in-order core of most phones: XNNPACK's NEON kernels without SDOT


def test_cpuinfo_is_what_linux_prints_on_arm64():
    text = cpuinfo_text(midr=0x410FD034, hwcap=0x8FB, hwcap2=1 << 13, processors=[0, 1])  # a Cortex-A53 r0p4 (+ i8mm, as a check of HWCAP2)
    entries = text.strip().split("\n\n")
    assert [e.splitlines()[0] for e in entries] == ["processor\t: 0", "processor\t: 1"]
    assert "Features\t: fp asimd aes pmull sha1 sha2 crc32 cpuid i8mm\n" in entries[0]
    for line in ("CPU implementer\t: 0x41", "CPU architecture: 8", "CPU variant\t: 0x0", "CPU part\t: 0xd03", "CPU revision\t: 4"):
        assert line in entries[1].splitlines()


def test_comparison_with_x86_counts_int8_steps_and_float_ulps():
    x86 = {"conf": np.array([0.5, 0.25, 0.0], np.float32), "loc": np.array([1.0, -2.0, 3.0], np.float32)}
    arm = {"conf": np.array([0.5, 0.25 + 1 / 256, 0.0], np.float32), "loc": np.array([1.0, -2.0, np.nextafter(np.float32(3), np.float32(4))], np.float32)}
    result = compare_with_x86(x86, arm, {"conf": 1 / 256, "loc": None})
    assert result["conf"] | {"max_rel": round(result["conf"]["max_rel"], 6)} == {
        "identical": False, "differing": 1, "values": 3, "max_lsb": 1.0, "lsb": "int8 step 0.00391", "max_rel": round(1 / 256 / 0.5, 6)
    }  # fmt: skip
    assert result["loc"]["max_lsb"] == 1.0 and result["loc"]["lsb"] == "float32 ULP of the largest value"
    assert compare_with_x86(x86, x86, {"conf": 1 / 256, "loc": None})["loc"] == {
        "identical": True, "differing": 0, "values": 3, "max_lsb": 0.0, "lsb": "float32 ULP of the largest value", "max_rel": 0.0
    }  # fmt: skip


def test_private_apt_sources_add_the_source_twin_of_every_binary_entry(tmp_path):
    etc, apt = tmp_path / "etc", tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n# deb http://old\n")
    (etc / "sources.list.d" / "debian.sources").write_text("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n")
    (etc / "sources.list.d" / "off.list.disabled").write_text("deb http://elsewhere\n")
    _copy_sources_with_deb_src(etc, apt)
    assert (apt / "sources.list").read_text().splitlines() == [
        "deb http://deb.debian.org/debian bookworm main", "deb-src http://deb.debian.org/debian bookworm main", "# deb http://old"
    ]  # fmt: skip
    assert (apt / "sources.list.d" / "debian.sources").read_text().startswith("Types: deb deb-src\n")
    assert sorted(p.name for p in (apt / "sources.list.d").iterdir()) == ["debian.sources"]


@pytest.mark.parametrize(
    "command", [["parity", "EXPORT", "--images", "PHOTOS", "--arm", ARM_CPU], ["benchmark", "EXPORT", "--image", "PHOTO", "--arm-count", ARM_CPU]]
)
def test_arm_options_without_the_setup_are_one_line(command, tmp_path, capsys):
    cache = tmp_path / "no_cache"
    (tmp_path / "photo.jpg").touch()  # the benchmark checks that its photo exists before the options after it
    places = {"EXPORT": tmp_path, "PHOTOS": tmp_path, "PHOTO": tmp_path / "photo.jpg"}
    argv = [str(places.get(word, word)) for word in command]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--arm-cache", str(cache)])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"ARM emulation is not set up in {cache}: run `mobilekit arm-setup --cache {cache}` first" in err


def test_arm_setup_names_a_missing_tool(tmp_path, monkeypatch, capsys):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool):
            (tools / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(SystemExit) as exit_info:
        main(["arm-setup", "--cache", str(tmp_path / "cache")])
    assert exit_info.value.code == 2
    assert "arm-setup needs `" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_default_cache_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILEKIT_ARM_CACHE", str(tmp_path / "arm"))
    assert default_cache() == tmp_path / "arm"
    monkeypatch.delenv("MOBILEKIT_ARM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache() == tmp_path / "xdg" / "mobilekit" / "arm"


# -- with the emulator (slow: the setup from nothing takes about a minute, each emulated file seconds) --------
@pytest.fixture(scope="module")
def arm_cache() -> Path:
    """``mobilekit arm-setup`` into the default cache ($MOBILEKIT_ARM_CACHE or ~/.cache/mobilekit/arm):
    from nothing on a fresh machine, a no-op when it is already there."""
    from mobilekit.converters.arm_setup import setup

    setup(default_cache(), log=lambda line: None)
    return default_cache()


# At 128 px RetinaFace finds no face on these three photos: they calibrate the int8 file, and the other
# three (10 faces) are the held-out photos its face judgement needs.
CALIBRATION_128 = ("bus_1080x810.jpg", "crowd_1150x2048.jpg", "crowd_898x1600.jpg")


@pytest.fixture(scope="module")
def retinaface_128(shared: Path, tmp_path_factory) -> Path:
    """RetinaFace with its trained weights at 128: ONNX, TFLite fp32 and int8 (calibrated on :data:`CALIBRATION_128`)."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    calibration = tmp_path_factory.mktemp("calibration_128")
    for name in CALIBRATION_128:
        (calibration / name).symlink_to(shared / "images" / name)
    weights = shared / "weights" / "retinaface_mnet025_widerface.pth"
    out = tmp_path_factory.mktemp("retinaface_128")
    export_model(build_source_model("retinaface_mnet025", weights), 128, out, formats=("onnx", "fp32", "int8"),
                 calib_images=calibration, source=source_metadata(weights, None))  # fmt: skip
    return out


@pytest.mark.slow
def test_arm_setup_is_idempotent(arm_cache, capsys):
    manifest = json.loads((arm_cache / "setup.json").read_text())
    main(["arm-setup", "--cache", str(arm_cache)])
    assert "already set up" in capsys.readouterr().err
    assert json.loads((arm_cache / "setup.json").read_text()) == manifest
    assert manifest["qemu"].startswith("1:7.2") and manifest["wheels"]["ai_edge_litert"].startswith("2.3")


@pytest.mark.slow
def test_parity_on_an_emulated_arm_cpu(arm_cache, retinaface_128, shared, tmp_path):
    report_md = tmp_path / "parity.md"
    main_exit = None
    try:
        main(["parity", str(retinaface_128), "--images", str(shared / "images"), "--arm", ARM_CPU, "--arm-images", "3",
              "--arm-cache", str(arm_cache), "--report", str(report_md)])  # fmt: skip
    except SystemExit as exc:
        main_exit = exc.code
    report = json.loads((retinaface_128 / "parity.json").read_text())
    assert main_exit in (None, 0), [a["verdict"] for a in report["artefacts"] if not a["passed"]]
    assert [c["cpu"] for c in report["arm"]["cpus"]] == [ARM_CPU] and report["arm"]["cpus"][0]["midr"] == "0x410fd034"
    tflite = {a["variant"]: a for a in report["artefacts"] if a["file"].endswith(".tflite")}
    assert set(tflite) == {"fp32", "int8"}
    for variant, artefact in tflite.items():
        (on_arm,) = artefact["arm"]
        assert on_arm["passed"] and on_arm["cpu"] == ARM_CPU and "on emulated cortex-a53" in on_arm["kernels"]
        assert len(on_arm["images"]) == 3
        outputs = on_arm["versus_x86"]["outputs"]
        assert set(outputs) == {"loc", "conf", "landmarks"}
        if variant == "fp32":  # other kernels, other summation order: within a few float32 ULPs
            assert max(m["max_rel"] for m in outputs.values()) < 1e-5
        else:  # the same int8 arithmetic on both CPUs, up to one step of an output's grid (int8 SOFTMAX)
            assert max(m["max_lsb"] for m in outputs.values()) <= 1
        faces = on_arm["versus_x86"]["faces"]
        assert faces["found"] == faces["faces"] and faces["confirmed"] == faces["file_faces"]
    assert not set(tflite["int8"]["arm"][0]["images"]) & set(CALIBRATION_128)  # held-out photos first
    assert "## On emulated ARM64 CPUs" in report_md.read_text()


@pytest.mark.slow
def test_instruction_counts_repeat_exactly(arm_cache, retinaface_128, shared):
    from mobilekit.benchmarks.arm_count import count_files, tflite_files
    from mobilekit.converters.arm_setup import ArmCache

    files = [f for f in tflite_files([retinaface_128]) if f[1]["artefact"]["variant"] == "fp32"]
    image = shared / "images" / "group_768x1024.jpg"
    first, second = (count_files(ArmCache(arm_cache), [ARM_CPU], files, image) for _ in range(2))
    assert first[0]["counts"] == second[0]["counts"] and not first[0]["errors"]
    assert 1e6 < first[0]["instructions"][ARM_CPU] < 1e8  # RetinaFace at 128: ~25 M


def test_instruction_report_ratios_and_markdown():
    from mobilekit.benchmarks.arm_count import markdown, ratios

    def row(model, variant, a53, n1):
        return {"file": f"{model}_320_{variant}.tflite", "model": model, "variant": variant, "imgsz": [320, 320],
                "instructions": {"cortex-a53": a53, "neoverse-n1": n1}, "errors": {}}  # fmt: skip

    rows = [row("retinaface_mnet025", "fp32", 150, 100), row("retinaface_mnet025", "int8", 120, 50), row("featherface_v1", "fp32", 240, 190)]
    result = ratios(rows, ["cortex-a53", "neoverse-n1"])
    assert result["int8_vs_fp32"] == {"retinaface_mnet025 @320x320": {"cortex-a53": 0.8, "neoverse-n1": 0.5}}
    assert result["vs_retinaface"] == {"featherface_v1 @320x320 fp32": {"cortex-a53": 1.6, "neoverse-n1": 1.9}}
    cpus = [{"cpu": c, "qemu_cpu": c, "midr": "0x0", "features": "fp"} for c in ("cortex-a53", "neoverse-n1")]
    setup = {"qemu": "7.2", "python3.11_arm64": "3.11", "wheels": {"ai_edge_litert": "2.3.0", "numpy": "2"}}
    faces = {"retinaface_mnet025_320_int8.tflite": {"cortex-a53": {"identical": True, "found": 27, "faces": 27}}}
    text = markdown({"setup": setup, "cpus": cpus, "image": "group.jpg", "repeats": 3, "files": rows, "ratios": result, "int8_faces_equal_x86": faces})
    assert "| retinaface_mnet025_320_int8.tflite | 0.00 | 0.00 | cortex-a53: yes (x86's faces within IoU 0.9: 27/27) |" in text
    assert "| featherface_v1 @320x320 fp32 | 1.6 | 1.9 |" in text
