"""What an installation holds. The wheel built from the source tree, and the wheel built from its sdist, carry
every module of the package folders and every file mobilekit reads at run time (``package_data.SHIPPED``) and
nothing else (no ``benchmarks/results/``), and the wheel's copy runs with no checkout on the path.

The tree is copied first (git's tracked and untracked, not ignored files: a clean clone plus the work in
progress), so builds never write into the checkout and nothing ignored can slip into a wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from mobilekit.families import FAMILIES
from mobilekit.package_data import SHIPPED
from mobilekit.paths import PROJECT_ROOT

# Source folder -> where its modules install (setup.py maps models/ to mobilekit.models, ...).
PACKAGE_FOLDERS = {"mobilekit": "mobilekit", "models": "mobilekit/models", "converters": "mobilekit/converters", "benchmarks": "mobilekit/benchmarks"}


def copy_source_tree(target: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():  # tracked files deleted in the work tree are listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def expected_wheel_files(tree: Path) -> set[str]:
    modules = {
        f"{installed}/{path.relative_to(tree / folder).as_posix()}"
        for folder, installed in PACKAGE_FOLDERS.items()
        for path in (tree / folder).rglob("*.py")
    }
    data: set[str] = set()
    for name in (*SHIPPED, *(family.dart_decoder for family in FAMILIES.values())):
        path = tree / "mobilekit" / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        assert files and all(p.is_file() for p in files), f"mobilekit/{name} is missing from the source tree"
        data |= {f"mobilekit/{p.relative_to(tree / 'mobilekit').as_posix()}" for p in files}
    return modules | data


def build_wheel(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("mobilekit-*.whl")
    return wheel


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if not n.split("/")[0].endswith(".dist-info")}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(copied source tree, the wheel built from it)."""
    base = tmp_path_factory.mktemp("install")
    tree = copy_source_tree(base / "src")
    return tree, build_wheel(tree, base / "wheel")


@pytest.mark.slow
def test_wheel_holds_every_module_and_shipped_file_and_nothing_else(built) -> None:
    tree, wheel = built
    files = wheel_files(wheel)
    expected = expected_wheel_files(tree)
    assert not expected - files, f"missing from the wheel: {sorted(expected - files)}"
    assert not files - expected, f"not expected in the wheel: {sorted(files - expected)}"
    assert not any(n.startswith("mobilekit/benchmarks/results") for n in files)


@pytest.mark.slow
def test_the_wheels_copy_runs_without_the_checkout(built, tmp_path) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    check = (
        "import mobilekit, mobilekit.cli, mobilekit.models, mobilekit.converters.export, mobilekit.benchmarks.suite\n"
        "from mobilekit.package_data import SHIPPED, shipped\n"
        "print(mobilekit.__file__)\n"
        "assert all(shipped(name).is_file() or any(shipped(name).iterdir()) for name in SHIPPED)\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()).is_relative_to(tmp_path / "site")
    usage = subprocess.run([sys.executable, "-m", "mobilekit", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0 and "package" in usage.stdout, usage.stderr[-2000:]


@pytest.mark.slow
def test_the_sdist_builds_the_same_wheel(built, tmp_path) -> None:
    tree, wheel = built
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=tree, check=True, capture_output=True, timeout=300)
    (sdist,) = tmp_path.glob("mobilekit-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert wheel_files(build_wheel(unpacked, tmp_path / "wheel")) == wheel_files(wheel)
