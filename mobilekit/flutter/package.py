"""``package_export``: an export folder -> a folder of Flutter assets a developer copies as is.

Layout (see ``flutter_assets/README.md``)::

    model.tflite          the chosen variant, with model_meta.json embedded ("mobilekit_meta"), the
                          standard TFLite Metadata ("TFLITE_METADATA") and anchors.json + labels.txt
                          as its associated files (a zip appended to the file)
    model_meta.json       input/output contract, decoder settings, priors, parity (and whether the file
                          passed it: ``verification``), versions
    anchors.json          priors in output-row order (or the YOLO grid description)
    labels.txt            one class: face
    pubspec_snippet.yaml  the assets block to paste into the app's pubspec.yaml
    README.md             how to load and run it with tflite_flutter
    golden/               input.png, raw outputs (npy by name, and .bin little-endian float32 with
                          shapes in index.json, as is the input), expected detections (json)
    lib/                  the Dart decoder (mirror of mobilekit.flutter.reference_decoder)
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from mobilekit.atomic import write_json_atomic
from mobilekit.config import DeployConfig
from mobilekit.converters.parity_report import export_report_path
from mobilekit.converters.runtimes import TFLiteRuntime
from mobilekit.converters.sidecars import find_artefacts, sha256_file, sidecar_path, tool_versions
from mobilekit.converters.variants import TFLITE_KINDS, VARIANT
from mobilekit.data.synth import render_synthetic_image
from mobilekit.detections import Detections
from mobilekit.errors import CheckFailed, MobilekitError
from mobilekit.families import decode_outputs, deploy_from_dict, family_of
from mobilekit.flutter import camera_input, reference_decoder, standard_metadata
from mobilekit.flutter import end_to_end as e2e_graph
from mobilekit.flutter.converter_choice import choose_converter
from mobilekit.flutter.embedded_json import METADATA_NAME, embed_metadata
from mobilekit.flutter.readme_template import APP_README, UNVERIFIED_NOTICE
from mobilekit.flutter.verification import require_verified, verdict, verification_block
from mobilekit.image_io import list_images, read_image, resize_to_input
from mobilekit.package_data import DART_DECODER, copy_shipped_file, copy_shipped_folder
from mobilekit.paths import shared_dir

SCHEMA_VERSION = "mobilekit.flutter/1"
SYNTHETIC_GOLDEN, SYNTHETIC_GOLDEN_SIZE = "synthetic_faces_seed0.png", 640  # the golden picture without shared photos
LABELS = ("face",)
ASSOCIATED_FILES = ("anchors.json", "labels.txt")  # packed into model.tflite for the standard metadata


class PackageError(MobilekitError):
    """An export folder that cannot be packaged, with the file named."""


# -- choosing the input ---------------------------------------------------------------------------
def find_tflite(export_dir: Path, precision: str) -> list[tuple[Path, dict]]:
    """The exported TFLite files of ``precision`` in ``export_dir`` with their sidecars: one per converter
    (onnx2tf's and litert's twin), at least one."""
    if precision not in TFLITE_KINDS:
        raise PackageError(f"unknown precision {precision!r}; choose from {', '.join(TFLITE_KINDS)}")
    if not export_dir.is_dir():
        raise PackageError(f"export folder not found: {export_dir}")

    def kind(meta: dict) -> str | None:
        variant = VARIANT.get(meta["artefact"]["variant"])
        return variant.kind if variant else None

    found = [(p, m) for p, m in find_artefacts(export_dir) if m["artefact"]["format"] == "tflite" and kind(m) == precision]
    if not found:
        orphans = sorted(export_dir.glob(f"*_{precision}.tflite"))
        if orphans:
            state = "an unreadable" if sidecar_path(orphans[0]).is_file() else "no"
            raise PackageError(f"{orphans[0]} has {state} metadata sidecar {sidecar_path(orphans[0]).name} (re-export it with mobilekit export)")
        present = sorted(p.name for p in export_dir.glob("*.tflite")) or ["no .tflite files"]
        raise PackageError(f"no TFLite {precision} model with a sidecar in {export_dir} (found: {', '.join(present)}); export it with mobilekit export")
    variants = [m["artefact"]["variant"] for _, m in found]
    if len(set(variants)) != len(variants):
        raise PackageError(f"{export_dir} holds several TFLite {precision} models ({', '.join(p.name for p, _ in found)}): package from a folder with one")
    return found


def golden_photo(golden_image: str | Path | None) -> tuple[str, np.ndarray]:
    """The golden picture (name, RGB): ``golden_image``; else the group photo of the shared images where
    they exist (a checkout with ``../shared``); else a synthetic picture of faces (seed 0), so that
    packaging works on any machine."""
    if golden_image is not None:
        return Path(golden_image).name, read_image(golden_image)
    folder = shared_dir() / "images"
    images = list_images(folder) if folder.is_dir() else []
    if images:
        preferred = [p for p in images if p.name.startswith("group")]
        photo = (preferred or images)[0]
        return photo.name, read_image(photo)
    return SYNTHETIC_GOLDEN, render_synthetic_image(np.random.default_rng(0), SYNTHETIC_GOLDEN_SIZE)[0]

FAMILY_DART_FILE = "family_decoder.dart"  # the name face_decoder.dart's `part` directive gives the family's decoder


# -- metadata ---------------------------------------------------------------------------------------
def decoder_settings(deploy: DeployConfig, input_hw: tuple[int, int], e2e: dict | None) -> dict:
    """The ``decoder`` block of model_meta.json (what ``detect`` in Dart and NumPy reads)."""
    post = family_of(deploy).postprocess(deploy)
    if e2e is not None:
        kind, nms_offset, max_det = "end_to_end", e2e["nms_offset"], e2e["max_detections"]
        score, iou = e2e["score_threshold"], e2e["nms_iou"]
    else:
        kind, score, iou, max_det = deploy.decoder, deploy.score_threshold, deploy.nms_iou, post.max_detections
        nms_offset = post.nms_offset
    return {
        "kind": kind,
        **family_of(deploy).decoder_fields(deploy),
        "score_threshold": score,
        "nms_iou": iou,
        "nms_offset": nms_offset,
        "nms_note": "area = (x2 - x1 + nms_offset) * (y2 - y1 + nms_offset); suppress when IoU > nms_iou",
        "pre_nms_top_k": post.pre_nms_top_k,
        "score_clipping": family_of(deploy).score_clipping,
        "max_detections": max_det,
        "anchors_file": "anchors.json",
        "input_hw": list(input_hw),
    }


def output_columns(name: str, deploy: DeployConfig, e2e: bool) -> list[str]:
    """The meaning of every column of an output's last axis (the family's, or the end-to-end graph's)."""
    return e2e_graph.output_columns(name, deploy) if e2e else family_of(deploy).output_columns(name, deploy)


def output_specs(runtime: TFLiteRuntime, deploy: DeployConfig, e2e: bool) -> list[dict]:
    """Outputs of the ``serving_default`` signature with shapes, dtypes, interpreter index and meaning."""
    tensor_index = {d["index"]: i for i, d in enumerate(runtime.interpreter.get_output_details())}
    meanings = e2e_graph.output_meanings(deploy) if e2e else family_of(deploy).output_meanings
    specs = []
    for name in runtime.output_names:
        detail = runtime.output_details[name]
        spec = {
            "name": name,
            "interpreter_output_index": tensor_index.get(detail["index"]),
            "shape": [int(v) for v in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "meaning": meanings.get(name, ""),
            "columns": output_columns(name, deploy, e2e),
        }
        if spec["dtype"] not in ("float32", "int32"):
            spec["quantization"] = {"scale": float(detail["quantization"][0]), "zero_point": int(detail["quantization"][1])}
        specs.append(spec)
    return specs


def input_spec(runtime: TFLiteRuntime, deploy: DeployConfig) -> dict:
    detail = runtime.input_details
    spec = {
        "name": runtime.input_name,
        "shape": [int(v) for v in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "layout": "NHWC",
        "channel_order": "RGB",
        "value_range": [0, 255],
        "normalization": "none: feed raw RGB pixel values, the graph normalises",
        "resize": {"mode": deploy.resize, "pad_value": deploy.pad_value, "interpolation": "bilinear", "letterbox_alignment": "centered"},
    }
    if spec["dtype"] != "float32":
        spec["quantization"] = {"scale": float(detail["quantization"][0]), "zero_point": int(detail["quantization"][1])}
    return spec


# -- parity -----------------------------------------------------------------------------------------
def quick_parity(meta: dict, deploy: DeployConfig, image: np.ndarray, outputs: dict, faces: Detections, e2e: bool) -> dict:
    """PyTorch vs the packaged model on the golden image: tensors (plain model) and faces."""
    from mobilekit.converters.model_source import rebuild_source_model
    from mobilekit.converters.parity import FACE_SCORE, face_agreement, summarize_faces, tensor_metrics
    from mobilekit.converters.runtimes import TorchRuntime
    source = meta["model"]
    weights = source.get("weights")
    if weights is not None and not Path(weights).is_file():
        return {"source": "not computed", "reason": f"weights {weights} recorded in the sidecar are not on this machine"}
    model = rebuild_source_model(source)
    reference = TorchRuntime(model).run(image[None])
    input_hw = image.shape[:2]
    post = family_of(deploy).postprocess(deploy, nms_offset=0.0 if e2e else None)
    ref_faces = decode_outputs(deploy, {k: v[0] for k, v in reference.items()}, input_hw, post).numpy()
    result = {
        "source": "golden image, computed at packaging",
        "face_score": FACE_SCORE,
        "faces": summarize_faces([face_agreement(ref_faces, faces, family_of(deploy).parity_tolerance(deploy).match_iou(VARIANT[meta["artefact"]["variant"]].precision))]),
        "reference_decode": "mobilekit.families.decode_outputs" + (" with nms_offset=0 (TF NMS convention)" if e2e else ""),
    }
    if not e2e:
        result["tensors"] = {name: tensor_metrics(reference[name], outputs[name]) for name in reference}
    return result


# -- writing ----------------------------------------------------------------------------------------


def _readme(meta: dict) -> str:
    inp, dec = meta["input"], meta["decoder"]
    verification = meta["verification"]
    notice = "" if verification["verified"] else UNVERIFIED_NOTICE.format(reason=verification["reason"])
    outputs = "\n".join(f"| `{o['name']}` | {o['interpreter_output_index']} | {o['shape']} | {o['dtype']} | {o['meaning']} |" for o in meta["outputs"])
    return APP_README.format(
        notice=notice,
        model=meta["model"]["name"],
        variant=meta["model"]["variant"],
        height=inp["shape"][1],
        width=inp["shape"][2],
        input_name=inp["name"],
        input_dtype=inp["dtype"],
        resize=inp["resize"]["mode"],
        pad_value=f"{inp['resize']['pad_value']:g}",
        uint8="true" if inp["dtype"] == "uint8" else "false",
        resize_how="stretching (no aspect ratio kept)" if inp["resize"]["mode"] == "stretch" else f"letterboxing (aspect kept, centred, pad value {inp['resize']['pad_value']:g})",
        outputs=outputs,
        kind=dec["kind"],
        score=dec["score_threshold"],
        iou=dec["nms_iou"],
        landmarks=", ".join(meta["landmark_order"]),
    )


PUBSPEC_SNIPPET = """# Paste under the `flutter:` section of your app's pubspec.yaml (folder copied to {folder}/).
dependencies:
  tflite_flutter: ^0.11.0

flutter:
  assets:
    - {folder}/model.tflite
    - {folder}/model_meta.json
    - {folder}/anchors.json
    - {folder}/labels.txt
"""


def package_export(
    export_dir: str | Path,
    out_dir: str | Path,
    precision: str = "fp32",
    end_to_end: bool = False,
    golden_image: str | Path | None = None,
    max_detections: int = e2e_graph.DEFAULT_MAX_DETECTIONS,
    parity_report: str | Path | None = None,
    unverified: bool = False,
) -> Path:
    """Package the ``precision`` TFLite of ``export_dir`` (or its end-to-end variant) into ``out_dir``.

    Only a file that ``parity_report`` (default: the export folder's, see ``verification``) passes is
    packaged; ``unverified`` packages it anyway and says so in model_meta.json and the README.
    The folder is written under a temporary name next to ``out_dir`` and renamed when complete; an
    existing ``out_dir`` is replaced only then. Returns ``out_dir``.
    """
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    candidates = find_tflite(export_dir, precision)
    report = Path(parity_report) if parity_report is not None else export_report_path(export_dir)
    verdicts = {path.name: verdict(report, path) for path, _ in candidates}
    tflite_path, meta = candidates[0]
    if len(candidates) == 1 and not unverified:
        require_verified(verdicts[tflite_path.name], export_dir)
    try:
        deploy = deploy_from_dict(meta["deploy"])
        input_hw = (int(meta["input_hw"][0]), int(meta["input_hw"][1]))
        model_meta = meta["model"]
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"{sidecar_path(tflite_path)} lacks or has an invalid field {exc}") from None
    if end_to_end:
        e2e_graph.check_supported(deploy, precision)
    golden_name, photo = golden_photo(golden_image)
    golden = resize_to_input(photo, input_hw, deploy.resize, deploy.pad_value)[0]
    converter_choice = None
    if len(candidates) > 1:
        tflite_path, meta, converter_choice = choose_converter(candidates, golden, verdicts, unverified)
    xnnpack = meta.get("tflite", {}).get("analysis", {}).get("xnnpack_load")
    if xnnpack is not None and not xnnpack["ok"]:
        raise CheckFailed(
            f"{tflite_path.name} fails in LiteRT with its default XNNPACK CPU delegate ({xnnpack['error']}), "
            "as an app would run it: package another precision of this model"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        e2e_info = None
        source_model = tflite_path
        if end_to_end:
            source_model = staging / "end_to_end.tflite"
            with tempfile.TemporaryDirectory(prefix="mobilekit_package_") as scratch:
                onnx_path = e2e_graph.network_onnx(export_dir, meta, scratch)
                e2e_info = e2e_graph.build_end_to_end(
                    onnx_path, deploy, input_hw, source_model, golden[None].astype(np.float32), precision, max_detections
                )
        runtime = TFLiteRuntime(source_model)
        outputs = runtime.run(golden[None])
        decoder = decoder_settings(deploy, input_hw, e2e_info)
        package_meta = {
            "schema_version": SCHEMA_VERSION,
            "model": {
                "name": model_meta["name"],
                "parameters": model_meta.get("parameters"),
                "variant": precision,
                "end_to_end": bool(end_to_end),
                "file": "model.tflite",
                "weights_sha256": model_meta.get("weights_sha256"),
                "random_init": model_meta.get("random_init", False),
            },
            "input": input_spec(runtime, deploy),
            "outputs": output_specs(runtime, deploy, bool(end_to_end)),
            "decoder": decoder,
            "priors": family_of(deploy).anchors(deploy),
            "landmark_order": list(family_of(deploy).keypoints(deploy)),
            "labels": list(LABELS),
            "export": {
                "source_file": tflite_path.name,
                "source_sha256": meta["artefact"].get("sha256"),
                "converter": meta["artefact"].get("converter", "onnx2tf"),
                "converter_choice": converter_choice,
                "end_to_end": e2e_info,
                "exported_at": meta["artefact"].get("exported_at"),
                "packaged_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
            "versions": {"export": meta.get("versions", {}), "package": tool_versions()},
        }
        settings = reference_decoder.DecoderSettings.from_meta(package_meta)
        anchors_doc = family_of(deploy).anchors_document(deploy, input_hw)
        anchors = reference_decoder.load_anchors(anchors_doc) if "anchors" in anchors_doc else None  # YOLO decodes in the graph
        faces = reference_decoder.detect(outputs, anchors, settings).numpy()
        found = verdicts[tflite_path.name]
        package_meta["verification"] = verification_block(found)
        package_meta["parity"] = (None if end_to_end else found.entry) or quick_parity(meta, deploy, golden, outputs, faces, bool(end_to_end))
        package_meta["golden"] = {
            "image": "golden/input.png",
            "source_image": golden_name,
            "outputs": {name: f"golden/outputs/{name}.npy" for name in outputs},
            "outputs_dtype": "float32 (quantised outputs dequantised with their scale / zero point)",
            "detections": "golden/expected_detections.json",
            "index": "golden/index.json",
        }
        write_json_atomic(staging / "anchors.json", anchors_doc)
        (staging / "labels.txt").write_text("\n".join(LABELS) + "\n")
        score_output = e2e_graph.SCORE_OUTPUT if end_to_end else family_of(deploy).score_output
        write_model(source_model, staging, package_meta, score_output)
        if source_model != tflite_path:
            source_model.unlink()
        write_json_atomic(staging / "model_meta.json", package_meta)
        (staging / "pubspec_snippet.yaml").write_text(PUBSPEC_SNIPPET.format(folder=f"assets/{out_dir.name}"))
        (staging / "README.md").write_text(_readme(package_meta))
        golden_dir = staging / "golden" / "outputs"
        golden_dir.mkdir(parents=True)
        cv2.imwrite(str(staging / "golden" / "input.png"), cv2.cvtColor(golden, cv2.COLOR_RGB2BGR))
        for name, value in outputs.items():
            np.save(golden_dir / f"{name}.npy", value)
        index = write_raw_goldens(staging / "golden", golden, outputs)
        index["camera_frames"] = write_camera_goldens(staging / "golden", photo, runtime, deploy, input_hw, settings, anchors)
        write_json_atomic(staging / "golden" / "index.json", index)
        write_json_atomic(
            staging / "golden" / "expected_detections.json",
            {"image": "input.png", "coordinates": "model-input pixels", "decoder": decoder, "faces": faces.to_json()},
        )
        copy_shipped_folder(DART_DECODER, staging / "lib")
        copy_shipped_file(family_of(deploy).dart_decoder, staging / "lib" / FAMILY_DART_FILE)
        os.chmod(staging, 0o755)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def write_model(source: Path, folder: Path, package_meta: dict, score_output: str) -> Path:
    """``folder/model.tflite``: ``source`` with mobilekit's JSON and the standard TFLite Metadata embedded,
    then ``anchors.json`` and ``labels.txt`` from ``folder`` appended as its associated files (last:
    embedding rewrites the flatbuffer). Records the final file's sha256 in ``package_meta``, which the
    embedded copy cannot hold."""
    target = folder / "model.tflite"
    standard = standard_metadata.to_buffer(standard_metadata.describe(package_meta, score_output))
    embed_metadata(source, target, {**package_meta, "embedded_as": METADATA_NAME}, {standard_metadata.METADATA_NAME: standard})
    standard_metadata.append_associated_files(target, {name: (folder / name).read_bytes() for name in ASSOCIATED_FILES})
    package_meta["model"]["sha256"] = sha256_file(target)
    return target


def write_raw_goldens(folder: Path, image: np.ndarray, outputs: dict[str, np.ndarray]) -> dict:
    """The golden input (RGB uint8, NHWC) and raw outputs (little-endian float32) as plain ``.bin``
    files that Dart reads with ``ByteData`` / ``Float32List``; returns the index (file, shape, dtype)."""
    entries = {"input": ("input_rgb.bin", image[None].astype(np.uint8))}
    entries.update({name: (f"outputs/{name}.bin", np.asarray(value, dtype="<f4")) for name, value in outputs.items()})
    index = {"byte_order": "little", "layout": "row-major (C order)", "files": {}}
    for name, (relative, array) in entries.items():
        np.ascontiguousarray(array).tofile(folder / relative)
        index["files"][name] = {"file": relative, "shape": list(array.shape), "dtype": array.dtype.name}
    return index


def camera_frames(photo: np.ndarray) -> dict[str, camera_input.CameraFrame]:
    """The upright RGB ``photo`` (cropped to even sides) as two sensor frames: an Android NV21 frame whose
    sensor is turned 90 degrees, and a mirrored iOS BGRA frame (front camera)."""
    photo = photo[: photo.shape[0] // 2 * 2, : photo.shape[1] // 2 * 2]
    sensor = cv2.rotate(photo, cv2.ROTATE_90_COUNTERCLOCKWISE)  # rotation 90 turns it upright again
    h, w = sensor.shape[:2]
    i420 = cv2.cvtColor(sensor, cv2.COLOR_RGB2YUV_I420).ravel()
    u = i420[h * w : h * w + h * w // 4].reshape(h // 2, w // 2)
    v = i420[h * w + h * w // 4 :].reshape(h // 2, w // 2)
    vu = np.stack([v, u], axis=-1).reshape(h // 2, w)
    nv21 = np.concatenate([i420[: h * w].reshape(h, w), vu]).tobytes()
    bgra = cv2.cvtColor(cv2.flip(photo, 1), cv2.COLOR_RGB2BGRA)  # mirror: the preview flips it back
    return {
        "nv21_rotation90": camera_input.CameraFrame("nv21", w, h, (camera_input.Plane(nv21, w),), rotation=90),
        "bgra8888_mirrored": camera_input.CameraFrame(
            "bgra8888", photo.shape[1], photo.shape[0], (camera_input.Plane(bgra.tobytes(), photo.shape[1] * 4, 4),), mirror=True
        ),
    }


def write_camera_goldens(folder: Path, photo: np.ndarray, runtime: TFLiteRuntime, deploy: DeployConfig,
                         input_hw: tuple[int, int], settings, anchors) -> dict:  # fmt: skip
    """``golden/camera/``: per frame its raw bytes and geometry, the model input ``cameraToInput`` makes
    of it, and the faces the decoder returns for it in upright preview pixels. Returns the index entries."""
    camera_dir = folder / "camera"
    camera_dir.mkdir()
    dtype = np.dtype(runtime.input_details["dtype"]).name
    entries = {}
    for name, frame in camera_frames(photo).items():
        model_input = camera_input.camera_to_input(frame, input_hw, deploy.resize, deploy.pad_value, dtype)
        faces = reference_decoder.detect(runtime.run(model_input), anchors, settings)
        preview = reference_decoder.undo_letterbox(faces.numpy(), camera_input.camera_transform(frame, input_hw, deploy.resize))
        (camera_dir / f"{name}.bin").write_bytes(b"".join(p.data for p in frame.planes))
        model_input.tofile(camera_dir / f"{name}_input.bin")
        entries[name] = {
            "frame": {
                "file": f"camera/{name}.bin",
                "format": frame.format,
                "width": frame.width,
                "height": frame.height,
                "rotation": frame.rotation,
                "mirror": frame.mirror,
                "planes": [{"bytes": len(p.data), "row_stride": p.row_stride, "pixel_stride": p.pixel_stride} for p in frame.planes],
            },
            "input": {"file": f"camera/{name}_input.bin", "shape": list(model_input.shape), "dtype": dtype},
            "faces": {"coordinates": "upright preview pixels", "faces": preview.to_json()},
        }
    return entries


def _replace_dir(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``; a previous ``out_dir`` is removed only after the swap."""
    old = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise PackageError(f"output path {out_dir} exists and is not a folder")
        old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
