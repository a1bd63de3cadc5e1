"""Where the ARM instructions go: one TFLite file's guest instructions per op on one emulated ARM64 CPU.

The file is cut after each op boundary as ``op_profile`` cuts it (a PAD stays with the convolution it
feeds); every prefix model is counted once under LiteRT's aarch64 wheel in qemu (XNNPACK, 1 thread, the
product's counter: ``python -m mobilekit.benchmarks.arm_count``, ``mobilekit benchmark --arm-count``),
and an op's count is the difference between the prefixes ending before and after it; grouped by kind @
resolution as ``op_profile`` groups its times. Needs ``mobilekit arm-setup`` once.

    python -m studies.arm_ops FILE.tflite --cpu neoverse-n1 --image PHOTO --out studies/results
        [--arm-cache DIR]

writes ``DIR/arm_ops_<stem>_<cpu>.json`` and ``.md``.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

from mobilekit.benchmarks.arguments import Parser, existing_file
from mobilekit.benchmarks.arm_count import prepared_image
from mobilekit.benchmarks.markdown import table, write_report
from mobilekit.converters.arm_emulation import GuestModel, count_instructions, describe_cpu, guest_model, parse_cpus
from mobilekit.converters.arm_setup import ArmCache, require_ready
from mobilekit.converters.sidecars import read_sidecar, sidecar_path
from mobilekit.errors import MobilekitError
from studies.op_profile import cut_points, tflite_ops, truncated_model


def op_instructions(cache: ArmCache, cpu: str, path: Path, image_path: Path) -> dict:
    """Instructions per op of ``path`` on ``cpu``: the model cut after each op boundary (op_profile's cut
    points: a PAD stays with the convolution it feeds), each prefix counted; an op's count is the
    difference between the prefixes ending before and after it. Grouped by kind @ resolution."""
    model_bytes = path.read_bytes()
    ops = tflite_ops(model_bytes)
    cuts = cut_points(ops)
    full, _ = guest_model(path, prepared_image(image_path, read_sidecar(path))[None])
    with tempfile.TemporaryDirectory(prefix="mobilekit_arm_cuts_") as scratch:
        prefixes = []
        for count in cuts:
            prefix = Path(scratch) / f"prefix_{count}.tflite"
            prefix.write_bytes(truncated_model(model_bytes, count) if count < len(ops) else model_bytes)
            prefixes.append(GuestModel(prefix, full.inputs, full.input_index, {}))
        runs = count_instructions(cache, cpu, prefixes, repeats=1)
    failed = next((run.error for run in runs if not run.counts), None)
    if failed:
        raise MobilekitError(f"{path.name} on {cpu}: a prefix model failed: {failed}")
    totals = dict(zip(cuts, (run.counts[0] for run in runs)))
    per_op, previous = [], 0
    for op in ops:  # a run of ops between two cuts is counted as one, on its last op
        if op.index + 1 in totals:
            per_op.append({"index": op.index, "op_type": op.op_type, "output_shape": op.output_shape, "group": op.group,
                           "instructions": totals[op.index + 1] - previous})  # fmt: skip
            previous = totals[op.index + 1]
    groups: dict[str, int] = defaultdict(int)
    for op in per_op:
        groups[op["group"]] += op["instructions"]
    return {"file": path.name, "cpu": cpu, "prefixes": len(cuts), "total": previous, "ops": per_op, "groups": dict(sorted(groups.items(), key=lambda g: -g[1]))}


def markdown(profile: dict) -> str:
    """The per-op table: instructions per kind @ resolution and its share of the whole file's."""
    cpu = profile.get("cpu_info") or {"cpu": profile["cpu"]}
    lines = [
        f"# Per op: {profile['file']} on {profile['cpu']} ({profile['total'] / 1e6:.1f} M instructions, {profile['prefixes']} prefix models)",
        "",
        f"Guest instructions of one invoke after a warm-up (LiteRT's aarch64 wheel under qemu user mode, XNNPACK, 1 thread), "
        f"on `{Path(profile.get('image', '?')).name}` resized as the model resizes; CPU {cpu['cpu']}"
        + (f" (`-cpu {cpu['qemu_cpu']}`, MIDR {cpu['midr']})" if "qemu_cpu" in cpu else "")
        + ". Prefix models cut as in `studies/op_profile.py`.",
        "",
        *table(["kind @ resolution", "M instructions", "share"], [[g, f"{n / 1e6:.2f}", f"{n / profile['total']:.1%}"] for g, n in profile["groups"].items()]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="arm_ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("tflite", type=existing_file(".tflite"), help="a .tflite file with its sidecar .json (mobilekit export)")
    parser.add_argument("--cpu", default="neoverse-n1", help="the emulated CPU (default: neoverse-n1)")
    parser.add_argument("--image", type=existing_file(), required=True, help="photo fed to the file (resized as its model resizes)")
    parser.add_argument("--arm-cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not sidecar_path(args.tflite).is_file():
        parser.exit(2, f"arm_ops: {args.tflite}: no sidecar {sidecar_path(args.tflite).name} beside it (export with mobilekit export)\n")
    try:
        cache = require_ready(args.arm_cache)
        cpu = parse_cpus(args.cpu, cache)[0]
        profile = op_instructions(cache, cpu, args.tflite, args.image)
    except MobilekitError as exc:
        parser.exit(2, f"arm_ops: {exc}\n")
    profile |= {"image": str(args.image), "cpu_info": describe_cpu(cache, cpu)}
    write_report(args.out, f"arm_ops_{args.tflite.stem}_{cpu}", profile, markdown(profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
