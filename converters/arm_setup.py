"""``mobilekit arm-setup``: everything the emulated ARM64 runs need, fetched into one cache folder, no root.

The pieces, each fetched with its ordinary client and unpacked (never installed into the host):

1. A private apt configuration (``apt/``): the host's own sources (plus their ``deb-src`` twins), its
   own lists, archive cache and an empty dpkg status, architectures amd64 + arm64. ``apt-get install
   --download-only`` then resolves every dependency from nothing.
2. ``host/``: Debian's ``qemu-user`` (``qemu-aarch64``, plugins enabled; Debian 12: qemu 7.2) and the
   amd64 libraries it links, started through the unpacked ``ld.so`` so that nothing on the host is needed.
3. ``sysroot/``: Debian's arm64 ``python3.11`` and ``libstdc++6`` with their dependencies (qemu's ``-L``).
4. ``site/``: the aarch64 wheels of the host's own ai-edge-litert and numpy versions (``pip download``).
5. ``plugin/``: ``qemu-plugin.h`` from qemu's Debian source package and the instruction counter
   (``mobilekit/native/arm_count_plugin.c``) built against it with gcc.

``setup.json`` is written last and lists the versions; when it is there (and the plugin was built from
the current source) the command does nothing, so it is idempotent. A piece that cannot be fetched is one
line naming it (:class:`MobilekitError`, exit status 2).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Iterator

from mobilekit.atomic import write_json_atomic
from mobilekit.converters.child_process import last_log_line
from mobilekit.errors import MobilekitError
from mobilekit.package_data import ARM_COUNT_PLUGIN, shipped

HOST_PACKAGES = ("qemu-user:amd64",)
SYSROOT_PACKAGES = ("python3.11:arm64", "libstdc++6:arm64")
WHEEL_PLATFORM_ARGS = ("--platform", "manylinux_2_27_aarch64", "--platform", "manylinux_2_17_aarch64",
                       "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")
STEP_TIMEOUT_S = 900


def default_cache() -> Path:
    """``$MOBILEKIT_ARM_CACHE``, else ``$XDG_CACHE_HOME/mobilekit/arm`` (``~/.cache/mobilekit/arm``)."""
    if os.environ.get("MOBILEKIT_ARM_CACHE"):
        return Path(os.environ["MOBILEKIT_ARM_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobilekit" / "arm"


@dataclass(frozen=True)
class ArmCache:
    """Where each piece lives inside the cache folder."""

    root: Path

    @property
    def apt(self) -> Path:
        return self.root / "apt"

    @property
    def host(self) -> Path:
        return self.root / "host"

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        return self.root / "site"

    @property
    def plugin(self) -> Path:
        return self.root / "plugin" / "libmkcount.so"

    @property
    def manifest(self) -> Path:
        return self.root / "setup.json"

    @property
    def cpus(self) -> Path:
        return self.root / "cpus"

    def qemu_command(self) -> list[str]:
        """``qemu-aarch64`` started by the unpacked amd64 loader with the unpacked libraries only."""
        libraries = [self.host / "lib/x86_64-linux-gnu", self.host / "usr/lib/x86_64-linux-gnu"]
        return [str(self.host / "lib64/ld-linux-x86-64.so.2"), "--library-path", ":".join(map(str, libraries)),
                str(self.host / "usr/bin/qemu-aarch64")]  # fmt: skip

    @property
    def python(self) -> Path:
        return self.sysroot / "usr/bin/python3.11"


def plugin_source_digest() -> str:
    return hashlib.sha256(shipped(ARM_COUNT_PLUGIN).read_bytes()).hexdigest()


def is_ready(cache: ArmCache) -> bool:
    """Every piece is there and the plugin was built from the current source."""
    if not cache.manifest.is_file():
        return False
    manifest = json.loads(cache.manifest.read_text())
    return manifest.get("plugin_source_sha256") == plugin_source_digest() and all(
        p.exists() for p in (cache.python, cache.plugin, cache.site / "ai_edge_litert", Path(cache.qemu_command()[-1]))
    )


def require_ready(cache_dir: Path | None) -> ArmCache:
    """The set-up cache, or one line telling how to set it up."""
    cache = ArmCache(cache_dir or default_cache())
    if not is_ready(cache):
        option = f" --cache {cache.root}" if cache_dir else ""
        raise MobilekitError(f"ARM emulation is not set up in {cache.root}: run `mobilekit arm-setup{option}` first")
    return cache


def setup(cache_dir: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Fetch and build every piece into ``cache_dir`` (default :func:`default_cache`); returns setup.json."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise MobilekitError(f"arm-setup needs an x86-64 Linux host (this is {platform.system()} {platform.machine()})")
    for tool in ("apt-get", "dpkg-deb", "gcc"):
        if shutil.which(tool) is None:
            raise MobilekitError(f"arm-setup needs `{tool}` on PATH (Debian: apt-get install {'gcc' if tool == 'gcc' else 'apt dpkg'})")
    cache = ArmCache(cache_dir or default_cache())
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MobilekitError(f"--cache {cache.root}: cannot create it ({exc.strerror})") from None
    with _locked(cache.root / ".lock"):
        if is_ready(cache):
            log(f"ARM emulation already set up in {cache.root}")
            return json.loads(cache.manifest.read_text())
        started = time.monotonic()
        shutil.rmtree(cache.cpus, ignore_errors=True)  # the emulated CPUs' roots describe the previous qemu
        apt_config = _write_apt_config(cache)
        log("apt: package lists (amd64 + arm64, sources)")
        _run(["apt-get", "update", "-q"], "apt-get update (are Debian's mirrors reachable?)", apt_config)
        log("apt: qemu-user, arm64 python3.11 and their dependencies")
        _run(["apt-get", "install", "-y", "-q", "--download-only", "--no-install-recommends", *HOST_PACKAGES, *SYSROOT_PACKAGES],
             f"apt-get download of {' '.join(HOST_PACKAGES + SYSROOT_PACKAGES)}", apt_config)  # fmt: skip
        debs = sorted((cache.apt / "cache/archives").glob("*.deb"))
        versions = _unpack_debs(cache, debs)
        log("pip: aarch64 wheels")
        versions["wheels"] = _fetch_wheels(cache)
        log("qemu-plugin.h from qemu's source package; building the instruction counter")
        header = _fetch_plugin_header(cache, apt_config, versions["qemu_source"])
        _build_plugin(cache, header)
        manifest = {
            **versions,
            "debian_packages": len(debs),
            "plugin_source_sha256": plugin_source_digest(),
            "setup_seconds": round(time.monotonic() - started, 1),
        }
        write_json_atomic(cache.manifest, manifest)
        shutil.rmtree(cache.apt)  # lists and packages: only the setup needs them
        log(f"ARM emulation set up in {cache.root} ({manifest['setup_seconds']} s)")
        return manifest


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One setup at a time per cache folder (parallel test runs share it)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _write_apt_config(cache: ArmCache) -> Path:
    """apt.conf with private state and the host's sources (``deb-src`` added), amd64 + arm64."""
    apt = cache.apt
    for folder in (apt / "lists/partial", apt / "cache/archives/partial", apt / "sources.list.d"):
        folder.mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    _copy_sources_with_deb_src(Path("/etc/apt"), apt)
    lines = [
        'APT::Architecture "amd64";',
        'APT::Architectures { "amd64"; "arm64"; };',
        f'Dir::State "{apt}";',
        f'Dir::State::lists "{apt / "lists"}";',
        f'Dir::State::status "{apt / "status"}";',
        f'Dir::Cache "{apt / "cache"}";',
        f'Dir::Etc::sourcelist "{apt / "sources.list"}";',
        f'Dir::Etc::sourceparts "{apt / "sources.list.d"}";',
    ]
    if os.geteuid() == 0:
        lines.append('APT::Sandbox::User "root";')  # apt's _apt user cannot write into a private cache
    config = apt / "apt.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


def _copy_sources_with_deb_src(etc: Path, apt: Path) -> None:
    """The host's ``sources.list`` and ``sources.list.d/*.{list,sources}``, each binary entry with its source twin."""
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    text = ""
    for path in one_line:
        if path.is_file():
            for line in path.read_text().splitlines():
                text += line + "\n" + (re.sub(r"^deb(\s)", r"deb-src\1", line) + "\n" if re.match(r"deb\s", line) else "")
    (apt / "sources.list").write_text(text)
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        deb822 = re.sub(r"^Types:\s*deb\s*$", "Types: deb deb-src", path.read_text(), flags=re.MULTILINE)
        (apt / "sources.list.d" / path.name).write_text(deb822)


def _run(command: list[str], what: str, apt_config: Path | None = None, cwd: Path | None = None) -> str:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", **({"APT_CONFIG": str(apt_config)} if apt_config else {}))
    try:
        proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MobilekitError(f"arm-setup: {what}: no answer within {STEP_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise MobilekitError(f"arm-setup: {what} failed: {last_log_line(proc.stdout + proc.stderr)}")
    return proc.stdout


def _deb_field(deb: Path, name: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), name], f"reading {deb.name}").strip()


def _unpack_debs(cache: ArmCache, debs: list[Path]) -> dict:
    """amd64 packages into ``host/`` (only ``qemu-aarch64`` of qemu's binaries kept), arm64 and
    architecture-independent ones into ``sysroot/``; returns the versions that matter."""
    targets = {cache.host: [d for d in debs if d.name.endswith("_amd64.deb")], cache.sysroot: [d for d in debs if not d.name.endswith("_amd64.deb")]}
    for folder, members in targets.items():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for deb in members:
            _run(["dpkg-deb", "-x", str(deb), str(partial)], f"unpacking {deb.name}")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    for binary in (cache.host / "usr/bin").glob("qemu-*"):
        if binary.name != "qemu-aarch64":
            binary.unlink()
    packages = {deb.name.split("_")[0]: deb for deb in debs}
    if "qemu-user" not in packages or "python3.11" not in packages:
        raise MobilekitError("arm-setup: apt fetched no qemu-user or no python3.11 package")
    source = _deb_field(packages["qemu-user"], "Source")  # "qemu (1:7.2+dfsg-7+deb12u18)" for a binNMU, else "qemu"
    versions = {"qemu": _deb_field(packages["qemu-user"], "Version"), "python3.11_arm64": _deb_field(packages["python3.11"], "Version")}
    versions["qemu_source"] = source[source.find("(") + 1 : -1] if "(" in source else versions["qemu"]
    return versions


def _fetch_wheels(cache: ArmCache) -> dict[str, str]:
    """The host's ai-edge-litert and numpy versions as aarch64 wheels, unzipped into ``site/``."""
    wanted = [f"{name}=={metadata.version(name)}" for name in ("ai-edge-litert", "numpy")]
    wheels = cache.root / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:", *WHEEL_PLATFORM_ARGS, "-d", str(wheels), *wanted],
         f"pip download of the aarch64 wheels {' '.join(wanted)}")  # fmt: skip
    partial = cache.site.with_name("site.partial")
    shutil.rmtree(partial, ignore_errors=True)
    versions = {}
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(partial)
        name, version = wheel.name.split("-")[:2]
        versions[name] = version
    shutil.rmtree(cache.site, ignore_errors=True)
    partial.rename(cache.site)
    shutil.rmtree(wheels)
    return versions


def _fetch_plugin_header(cache: ArmCache, apt_config: Path, source_version: str) -> Path:
    """``include/qemu/qemu-plugin.h`` out of the qemu source package the binary was built from."""
    source = cache.apt / "source"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir()
    _run(["apt-get", "source", "-q", "--download-only", f"qemu={source_version}"], f"apt-get source qemu={source_version}", apt_config, cwd=source)
    header = cache.plugin.parent / "qemu-plugin.h"
    header.parent.mkdir(parents=True, exist_ok=True)
    for tarball in sorted(source.glob("*.orig.tar.*")):
        with tarfile.open(tarball) as archive:
            for member in archive:
                if member.name.endswith("/include/qemu/qemu-plugin.h"):
                    header.write_bytes(archive.extractfile(member).read())
                    break
    shutil.rmtree(source)
    if not header.is_file():
        raise MobilekitError(f"arm-setup: qemu's source package {source_version} has no include/qemu/qemu-plugin.h")
    return header


def _build_plugin(cache: ArmCache, header: Path) -> None:
    with resources.as_file(shipped(ARM_COUNT_PLUGIN)) as source:
        _run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-I", str(header.parent), "-o", str(cache.plugin), str(source)], f"gcc {ARM_COUNT_PLUGIN}")
