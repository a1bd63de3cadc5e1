"""Package discovery (everything else is in pyproject.toml): every package under ``mobilekit/`` and under the
folders installed as its subpackages, found rather than listed, so that no new subpackage is left out of a wheel."""

from setuptools import find_packages, setup

SUBPACKAGE_FOLDERS = ("models", "converters", "benchmarks")  # models/ installs as mobilekit.models, ...

setup(
    packages=find_packages(include=["mobilekit", "mobilekit.*"])
    + [f"mobilekit.{name}" for name in find_packages(include=[f"{folder}{tail}" for folder in SUBPACKAGE_FOLDERS for tail in ("", ".*")])],
    package_dir={f"mobilekit.{folder}": folder for folder in SUBPACKAGE_FOLDERS},
)
