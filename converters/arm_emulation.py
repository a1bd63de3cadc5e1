"""TFLite files on emulated ARM64 CPUs: LiteRT's own aarch64 wheel under qemu user mode (``qemu-aarch64
-cpu CPU``), set up by :mod:`mobilekit.converters.arm_setup`.

XNNPACK picks its microkernels from the CPU it sees (NEON SMLAL on a Cortex-A53, SDOT on a Neoverse-N1,
SMMLA with i8mm), so each emulated CPU runs the kernels a phone with that core runs. Two things make
qemu 7.2 (Debian 12) usable:

- it hands the guest the host's x86 ``/proc/cpuinfo``, on which XNNPACK's cpuinfo segfaults in
  ``allocate_tensors()``. Each CPU gets its own ``-L`` root (links to the shared sysroot) holding an
  ARM-format ``proc/cpuinfo`` written from the emulated CPU itself: its ``MIDR_EL1`` (read with ``mrs``,
  which qemu's user mode allows) and its HWCAP/HWCAP2 bits (``/proc/self/auxv``);
- its ``max`` CPU computes XNNPACK's int8 SME kernels wrongly, so ``max`` (the one with i8mm) runs
  as ``max,sme=off``.

Emulated time is 100-1000x the host's and says nothing about a phone; instruction counts
(:func:`count_instructions`, the TCG plugin ``mobilekit/native/arm_count_plugin.c``) are exact and repeatable within one CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from mobilekit.atomic import write_text_atomic
from mobilekit.converters.arm_setup import ArmCache
from mobilekit.converters.child_process import last_log_line
from mobilekit.errors import MobilekitError

QEMU_CPU_FLAGS = {"max": "max,sme=off"}  # qemu 7.2's SME int8 results are wrong
GUEST_THREADS = 1  # one guest thread: the plugin's inline counter is exact, outputs do not depend on it
GUEST_TIMEOUT_S = 1800
# Linux's names of the arm64 HWCAP and HWCAP2 bits (arch/arm64/kernel/cpuinfo.c), bit 0 first.
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 "
               "asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()  # fmt: skip
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 dgh "
                "rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 smef32f32 smefa64 wfxt ebf16 sveebf16").split()  # fmt: skip
PROBE = """
import ctypes, mmap, struct
code = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
code.write(struct.pack("<II", 0xD5380000, 0xD65F03C0))  # mrs x0, midr_el1; ret
midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(code)))()
auxv = dict(struct.iter_unpack("<QQ", open("/proc/self/auxv", "rb").read()))
print(midr, auxv.get(16, 0), auxv.get(26, 0))  # AT_HWCAP, AT_HWCAP2
"""


@dataclass(frozen=True)
class ArmCheck:
    """``mobilekit parity --arm``: the set-up cache, the emulated CPUs, and at most how many photos each
    file runs on there (emulation is slow)."""

    cache: ArmCache
    cpus: tuple[str, ...]
    max_images: int


@dataclass
class GuestRun:
    """Output tensors ``{name: [N, ...]}`` of one file on one CPU (None when it failed; raw, or float32
    after :func:`run_on_arm`), what ran them, and the instructions of each counted invoke."""

    outputs: dict[str, np.ndarray] | None
    provider: str
    error: str | None = None
    counts: list[int] | None = None
    steps: dict[str, float | None] | None = None  # see output_steps


def parse_cpus(text: str, cache: ArmCache) -> list[str]:
    """``"cortex-a53,neoverse-n1"`` -> names checked against the CPUs this qemu emulates."""
    cpus = list(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    known = available_cpus(cache)
    unknown = [c for c in cpus if c not in known]
    if not cpus or unknown:
        raise MobilekitError(f"--arm: unknown CPU {', '.join(unknown) or repr(text)}; qemu {cache_version(cache)} emulates {', '.join(known)}")
    return cpus


@lru_cache
def available_cpus(cache: ArmCache) -> tuple[str, ...]:
    proc = subprocess.run([*cache.qemu_command(), "-cpu", "help"], capture_output=True, text=True)
    return tuple(line.strip() for line in proc.stdout.splitlines()[1:] if line.strip() and line.strip() != "host")


def cache_version(cache: ArmCache) -> str:
    return json.loads(cache.manifest.read_text()).get("qemu", "?")


def cpu_root(cache: ArmCache, cpu: str) -> Path:
    """The ``-L`` root of ``cpu``: links to the sysroot's top folders and an ARM ``proc/cpuinfo`` with one
    entry per host processor (XNNPACK's cpuinfo reads the processor list from the host's /sys)."""
    root = cache.cpus / cpu
    root.mkdir(parents=True, exist_ok=True)
    for entry in cache.sysroot.iterdir():
        link = root / entry.name
        if not link.is_symlink():
            with contextlib.suppress(FileExistsError):  # another process made it just now
                link.symlink_to(os.path.relpath(entry, root))
    identity = root / "identity.json"
    if not identity.is_file():
        proc = _guest(cache, cpu, cache.sysroot, ["-c", PROBE], timeout_s=300)
        if proc.returncode != 0:
            raise MobilekitError(f"--arm {cpu}: probing the emulated CPU failed: {last_log_line(proc.stderr)}")
        midr, hwcap, hwcap2 = (int(v) for v in proc.stdout.split())
        write_text_atomic(identity, json.dumps({"midr": midr, "hwcap": hwcap, "hwcap2": hwcap2}))
    text = cpuinfo_text(**json.loads(identity.read_text()), processors=host_processors())
    cpuinfo = root / "proc" / "cpuinfo"
    if not cpuinfo.is_file() or cpuinfo.read_text() != text:
        write_text_atomic(cpuinfo, text)
    return root


def host_processors() -> list[int]:
    """The host's possible processors (``/sys/devices/system/cpu/possible``, e.g. ``0-1``)."""
    processors = []
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        first, _, last = part.partition("-")
        processors += range(int(first), int(last or first) + 1)
    return processors


def cpuinfo_text(midr: int, hwcap: int, hwcap2: int, processors: list[int]) -> str:
    """``/proc/cpuinfo`` as Linux prints it on arm64."""
    features = [n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1] + [n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1]
    entry = (
        f"BogoMIPS\t: 50.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: {midr >> 24 & 0xFF:#04x}\n"
        f"CPU architecture: 8\nCPU variant\t: {midr >> 20 & 0xF:#x}\nCPU part\t: {midr >> 4 & 0xFFF:#05x}\nCPU revision\t: {midr & 0xF}\n\n"
    )
    return "".join(f"processor\t: {p}\n{entry}" for p in processors)


def _guest(cache: ArmCache, cpu: str, root: Path, arguments: list[str], timeout_s: float, plugin_out: Path | None = None) -> subprocess.CompletedProcess:
    """``python3.11 ARGUMENTS`` on the emulated ``cpu`` with ``root`` as qemu's ``-L``."""
    plugin = ["-plugin", f"{cache.plugin},out={plugin_out}"] if plugin_out else []
    command = [*cache.qemu_command(), *plugin, "-cpu", QEMU_CPU_FLAGS.get(cpu, cpu), "-L", str(root), str(cache.python), *arguments]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(cache.site), "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    try:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"no answer within {timeout_s:.0f} s")


@dataclass(frozen=True)
class GuestModel:
    """One file for the guest: its input tensors (``[N, *input shape]``, the model's dtype) and tensor indices."""

    path: Path
    inputs: np.ndarray
    input_index: int
    outputs: dict[str, int]


def run_models(cache: ArmCache, cpu: str, models: list[GuestModel], count: int = 0) -> list[GuestRun]:
    """Every model on the emulated ``cpu`` in one guest process; with ``count``, that many invokes of each
    counted after its inputs. A crash ends that model and the ones after it (each gets the error)."""
    root = cpu_root(cache, cpu)
    with tempfile.TemporaryDirectory(prefix="mobilekit_arm_") as work, resources.as_file(resources.files("mobilekit.converters") / "arm_guest.py") as guest:
        work = Path(work)
        job = {"threads": GUEST_THREADS, "count": count, "models": []}
        for i, model in enumerate(models):
            np.save(work / f"input{i}.npy", model.inputs)
            job["models"].append({"path": str(Path(model.path).resolve()), "input": str(work / f"input{i}.npy"), "input_index": model.input_index,
                                  "outputs": model.outputs, "out": str(work / f"output{i}.npz")})  # fmt: skip
        (work / "job.json").write_text(json.dumps(job))
        counts_path = work / "counts.txt" if count else None
        proc = _guest(cache, cpu, root, [str(guest), str(work / "job.json")], GUEST_TIMEOUT_S, counts_path)
        counts = [int(line) for line in counts_path.read_text().split()] if counts_path and counts_path.is_file() else []
        error = None if proc.returncode == 0 else f"{cpu}: exit status {proc.returncode}: {last_log_line(proc.stderr)}"
        runs = []
        for i, model in enumerate(models):
            output = work / f"output{i}.npz"
            if not output.is_file():
                runs.append(GuestRun(None, f"XNNPACK on {cpu}", error or f"{cpu}: no outputs"))
                continue
            with np.load(output) as data:
                raw = {name: data[name] for name in model.outputs}
                provider = f"XNNPACK ({int(data['__partitions__'])} partition(s)) on emulated {cpu}"
            marked = counts[1 + i * count : 1 + (i + 1) * count] if count else None
            runs.append(GuestRun(raw, provider, None, [c - counts[0] for c in marked] if marked else None))
        return runs


def guest_model(path: Path, images: np.ndarray) -> tuple[GuestModel, object]:
    """``path`` with ``images`` (``[N, H, W, 3]`` RGB 0-255) prepared as the x86 runtime prepares them,
    and that runtime (for :meth:`~mobilekit.converters.runtimes.TFLiteRuntime.dequantize`). The file is
    opened here on the built-in kernels, only to read its tensors' indices and quantisation."""
    from mobilekit.converters.runtimes import TFLiteRuntime

    runtime = TFLiteRuntime(path, 1, xnnpack=False)
    inputs = np.stack([runtime.prepare(image[None]) for image in images])
    outputs = {name: int(d["index"]) for name, d in runtime.output_details.items()}
    return GuestModel(path, inputs, int(runtime.input_details["index"]), outputs), runtime


def run_on_arm(cache: ArmCache, cpu: str, path: Path, images: np.ndarray) -> GuestRun:
    """``images`` through ``path`` on the emulated ``cpu``: outputs as float32 by name, like the x86 runtime's."""
    model, runtime = guest_model(path, images)
    (run,) = run_models(cache, cpu, [model])
    run.steps = output_steps(runtime)
    if run.outputs is not None:
        run.outputs = runtime.dequantize(run.outputs)
    return run


def count_instructions(cache: ArmCache, cpu: str, models: list[GuestModel], repeats: int = 2) -> list[GuestRun]:
    """Instructions of ``repeats`` invokes of each model on the emulated ``cpu``, after its inputs ran
    once (the warm-up); one guest process for all of them."""
    return run_models(cache, cpu, models, count=repeats)


def output_steps(runtime) -> dict[str, float | None]:
    """The step of each output's integer grid (a TFLiteRuntime's file): the output's own scale, or that of
    the int8 tensor a DEQUANTIZE made it from; None for a float output."""
    interpreter = runtime.interpreter
    producers = {t: op for op in interpreter._get_ops_details() for t in op["outputs"]}
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    steps = {}
    for name, detail in runtime.output_details.items():
        scale = detail["quantization"][0]
        producer = producers.get(detail["index"])
        if not scale and producer is not None and producer["op_name"] == "DEQUANTIZE":
            scale = tensors[producer["inputs"][0]]["quantization"][0]
        steps[name] = float(scale) or None
    return steps


def compare_with_x86(x86: dict[str, np.ndarray], arm: dict[str, np.ndarray], steps: dict[str, float | None]) -> dict[str, dict]:
    """Output by output, the ARM result against the x86 one (both float32 as the runtimes return them):
    ``identical`` (bit for bit), ``differing`` values, ``max_lsb`` (the largest difference in steps of
    the output's int8 grid, see :func:`output_steps`; for a float output in float32 ULPs of its largest
    x86 value) and ``max_rel`` (max abs difference / max abs x86 value)."""
    result = {}
    for name, expected in x86.items():
        got = arm[name]
        difference = float(np.abs(got.astype(np.float64) - expected).max())
        magnitude = float(np.abs(expected).max())
        step = steps[name] or float(np.spacing(np.float32(magnitude)))
        result[name] = {
            "identical": bool(np.array_equal(got.view(np.uint32), expected.view(np.uint32))),
            "differing": int(np.count_nonzero(got != expected)),
            "values": int(expected.size),
            "max_lsb": round(difference / step, 2),
            "lsb": f"int8 step {steps[name]:.3g}" if steps[name] else "float32 ULP of the largest value",
            "max_rel": difference / magnitude if magnitude else difference,
        }
    return result


def describe_cpu(cache: ArmCache, cpu: str) -> dict:
    """What the emulated CPU reports: MIDR and features (from its -L root's cpuinfo), qemu's -cpu flags."""
    identity = json.loads((cpu_root(cache, cpu) / "identity.json").read_text())
    features = re.search(r"Features\t: (.*)", cpuinfo_text(**identity, processors=[0])).group(1)
    return {"cpu": cpu, "qemu_cpu": QEMU_CPU_FLAGS.get(cpu, cpu), "midr": f"{identity['midr']:#010x}", "features": features}
