"""Session-scoped exports (and packages) shared by the test modules: each model/precision converts ONCE.

Loaded as a plugin from ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RETINAFACE = "retinaface_mnet025"
RETINAFACE_WEIGHTS = "weights/retinaface_mnet025_widerface.pth"
FEATHERFACE_WEIGHTS = "weights/featherface_v1_widerface.pth"
RANDOM_SIZE = 256


@pytest.fixture(scope="session")
def calibration_half(shared: Path, tmp_path_factory) -> Path:
    """Every other shared photo (sorted): int8 exports calibrate on these, and parity judges them on the
    other half, photos the calibration never saw."""
    folder = tmp_path_factory.mktemp("calibration_half")
    for path in sorted((shared / "images").glob("*.jpg"))[::2]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="session")
def retinaface_export(shared: Path, calibration_half: Path, tmp_path_factory) -> tuple[Path, list[Path]]:
    """RetinaFace-MobileNet-0.25 with the real weights at 640x640: ONNX, simplified ONNX, TFLite fp32/fp16/int8/int8_full
    (int8 calibrated on half of the shared photos). About a minute on 2 cores."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    weights = shared / RETINAFACE_WEIGHTS
    out = tmp_path_factory.mktemp("retinaface_export")
    model = build_source_model(RETINAFACE, weights)
    paths = export_model(
        model,
        640,
        out,
        formats=("onnx", "onnx_sim", "fp32", "fp16", "int8", "int8_full"),
        calib_images=calibration_half,
        source=source_metadata(weights, None),
    )
    return out, paths


@pytest.fixture(scope="session")
def featherface_export(shared: Path, calibration_half: Path, tmp_path_factory) -> Path:
    """FeatherFace V1 with the users' checkpoint at 640x640: ONNX, TFLite fp32/fp16/int8 (int8 calibrated on
    half of the shared photos)."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    weights = shared / FEATHERFACE_WEIGHTS
    out = tmp_path_factory.mktemp("featherface_v1_export")
    model = build_source_model("featherface_v1", weights)
    export_model(model, 640, out, formats=("onnx", "fp32", "fp16", "int8"), calib_images=calibration_half, source=source_metadata(weights, None))
    return out


@pytest.fixture(scope="session")
def retinaface_parity(retinaface_export, shared: Path, tmp_path_factory) -> dict:
    """``mobilekit parity`` (the CLI, in-process) on the RetinaFace export; the JSON report it wrote,
    plus the paths of its Markdown/PNG files and its exit status. It also leaves the report in the
    export folder (``parity.json``), where ``mobilekit package`` finds its verdicts."""
    from mobilekit.cli import main

    export_dir, _ = retinaface_export
    out = tmp_path_factory.mktemp("retinaface_parity")
    argv = ["parity", str(export_dir), "--images", str(shared / "images"), "--json", str(out / "parity.json"), "--report", str(out / "parity.md")]
    try:
        main(argv)
        status = 0
    except SystemExit as exc:
        status = exc.code
    report = json.loads((out / "parity.json").read_text())
    return {"report": report, "status": status, "markdown": out / "parity.md", "png": out / "parity.png"}


@pytest.fixture(scope="session")
def retinaface_packages(retinaface_export, retinaface_parity, tmp_path_factory) -> dict[str, Path]:
    """``mobilekit package`` folders of the RetinaFace export, fp32 and fp16, verified by the parity report
    in the export folder (test_package.py, test_standard_metadata.py)."""
    from mobilekit.flutter.package import package_export

    export_dir, _ = retinaface_export
    out = tmp_path_factory.mktemp("flutter_packages")
    return {p: package_export(export_dir, out / f"retinaface_{p}", p) for p in ("fp32", "fp16")}


@pytest.fixture(scope="session")
def two_shared_images(shared: Path, tmp_path_factory) -> Path:
    """A folder linking two of the shared photos (parity of random-weight exports needs no more)."""
    folder = tmp_path_factory.mktemp("two_images")
    for name in ("crowd_624x1024.jpg", "two_people_720x1280.jpg"):
        (folder / name).symlink_to(shared / "images" / name)
    return folder


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """ONNX + TFLite fp32 of a randomised RetinaFace at 64x64, through the export pipeline (seconds)."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    out = tmp_path_factory.mktemp("tiny_export")
    model = build_source_model(RETINAFACE, None, random_seed=0)
    export_model(model, 64, out, formats=("onnx", "fp32"), source=source_metadata(None, 0))
    return out


@pytest.fixture(scope="session")
def random_export_factory(tmp_path_factory):
    """``export(name)`` -> export dir of a randomly initialised (BN-randomised) model at 256x256:
    ONNX, simplified ONNX and TFLite fp32; cached per model for the session."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    cache: dict[str, Path] = {}

    def export(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"random_{name}")
            model = build_source_model(name, None, random_seed=0)
            export_model(model, RANDOM_SIZE, out, formats=("onnx", "onnx_sim", "fp32"), source=source_metadata(None, 0))
            cache[name] = out
        return cache[name]

    return export


@pytest.fixture(scope="session")
def retinaface_litert_export(shared: Path, tmp_path_factory) -> tuple[Path, list[Path]]:
    """RetinaFace with the real weights at 640x640 converted by litert-torch (fp32, fp16); about 30 s.
    onnx2tf's files of the same model are in ``retinaface_export``."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    weights = shared / RETINAFACE_WEIGHTS
    out = tmp_path_factory.mktemp("retinaface_litert")
    model = build_source_model(RETINAFACE, weights)
    paths = export_model(model, 640, out, formats=("fp32_litert", "fp16_litert"), source=source_metadata(weights, None))
    return out, paths


@pytest.fixture(scope="session")
def both_converters_export(tmp_path_factory) -> Path:
    """``mobilekit export --tflite --converter both`` (the CLI, in-process) on a random-init RetinaFace at 128x128."""
    from mobilekit.cli import main

    out = tmp_path_factory.mktemp("both_converters")
    main(["export", RETINAFACE, "--random-init", "--imgsz", "128", "--tflite", "--converter", "both", "--out", str(out)])
    return out


@pytest.fixture(scope="session")
def blazeface_exports(shared: Path, calibration_half: Path, tmp_path_factory):
    """``export(name)`` -> (model, export dir, {file name suffix: path}): BlazeFace with Google's weights at its
    own input size: ONNX, simplified ONNX, TFLite fp32/fp16/int8 (int8 calibrated on half of the shared photos;
    the family writes no int8_full). Cached per model for the session; 20-40 s each on 2 cores."""
    from mobilekit.converters import build_source_model, export_model, source_metadata

    cache: dict[str, tuple] = {}

    def export(name: str) -> tuple:
        if name not in cache:
            from mobilekit.models.blazeface import GOOGLE_WEIGHTS

            weights = shared / "weights" / GOOGLE_WEIGHTS[name]
            model = build_source_model(name, weights)
            out = tmp_path_factory.mktemp(name)
            paths = export_model(model, model.deploy.input_size, out, formats=("onnx", "onnx_sim", "fp32", "fp16", "int8", "int8_full"),
                                 calib_images=calibration_half, source=source_metadata(weights, None, name))
            cache[name] = (model, out, {p.name.rsplit("_", 1)[-1]: p for p in paths})
        return cache[name]

    return export


@pytest.fixture(scope="session")
def blazeface_packages(blazeface_exports, tmp_path_factory):
    """``package(name)`` -> the fp32 ``mobilekit package`` folder of :func:`blazeface_exports`' export, cached
    (``--unverified``: these tests check the package against MediaPipe's own faces instead of parity)."""
    from mobilekit.flutter.package import package_export

    cache: dict[str, Path] = {}

    def package(name: str) -> Path:
        if name not in cache:
            _, export_dir, _ = blazeface_exports(name)
            cache[name] = package_export(export_dir, tmp_path_factory.mktemp("flutter_packages") / name, "fp32", unverified=True)
        return cache[name]

    return package


@pytest.fixture(scope="session")
def judging_half(shared: Path, tmp_path_factory) -> Path:
    """The shared photos ``calibration_half`` leaves out: int8 files are judged on photos calibration never saw."""
    folder = tmp_path_factory.mktemp("judging_half")
    for path in sorted((shared / "images").glob("*.jpg"))[1::2]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.fixture(scope="session")
def yunet_exports(calibration_half: Path, judging_half: Path, tmp_path_factory):
    """``export(size)`` -> (export dir, parity report): YuNet-n with its authors' weights (the shipped ones, what
    ``--model yunet_n`` means without ``--weights``) at ``size`` x ``size``: ONNX, simplified ONNX, TFLite
    fp32/fp16/int8/int8_full (int8 calibrated on ``calibration_half``), and ``mobilekit parity`` of every file on
    ``judging_half``, left in the export folder for ``mobilekit package``. Cached per size; 2-4 minutes each on
    2 cores."""
    from mobilekit.converters import build_source_model, check_artefacts, export_model, source_metadata
    from mobilekit.converters.parity_report import export_report_path, write_json
    from mobilekit.models import released_weights

    cache: dict[int, tuple[Path, dict]] = {}

    def export(size: int) -> tuple[Path, dict]:
        if size not in cache:
            weights = released_weights("yunet_n")
            out = tmp_path_factory.mktemp(f"yunet_n_{size}")
            model = build_source_model("yunet_n", weights)
            export_model(model, size, out, formats=("onnx", "onnx_sim", "fp32", "fp16", "int8", "int8_full"),
                         calib_images=calibration_half, source=source_metadata(weights, None, "yunet_n"))
            report = check_artefacts(out, judging_half)
            write_json(report, export_report_path(out))
            cache[size] = (out, report)
        return cache[size]

    return export
