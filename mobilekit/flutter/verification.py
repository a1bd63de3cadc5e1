"""Whether a TFLite file may be packaged: the verdict ``mobilekit parity`` gave that very file.

Contract: ``mobilekit parity EXPORT_DIR`` (and ``mobilekit run``) write the JSON report to
``EXPORT_DIR/parity.json`` (``converters.parity_report.export_report_path``), one entry per file with
its name, sha256 and ``passed``. ``mobilekit package`` reads that report, or the one ``--parity REPORT``
names, and packages a file only when the entry with its name *and* sha256 passed (a file exported again
after the check is not the file that was checked). ``--unverified`` packages it anyway and says so in
``model_meta.json`` (``verification``) and the package README.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mobilekit.converters.parity_report import export_report_path
from mobilekit.converters.sidecars import sha256_file
from mobilekit.errors import CheckFailed, MobilekitError

ENTRY_KEYS = ("precision", "passed", "criterion", "verdict", "tensors", "faces")  # copied into model_meta.json's parity
PASSED, FAILED, UNCHECKED = "passed", "FAILED", "not checked"


@dataclass(frozen=True)
class Verdict:
    """What the report says of one file: ``status`` (:data:`PASSED`, :data:`FAILED`, :data:`UNCHECKED`),
    a one-line ``reason`` naming the report, and the report's entry for this very file (None when absent
    or about another file of the same name)."""

    file: str
    report: Path
    status: str
    reason: str
    entry: dict | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def shipped_reason(self) -> str:
        """``reason`` naming the report by its file name only (for model_meta.json: no local paths)."""
        return self.reason.replace(str(self.report), self.report.name)


def read_report(report: Path) -> dict | None:
    """The parity report at ``report``, None when there is no file; raises naming a file that is not one."""
    if not report.is_file():
        return None
    try:
        doc = json.loads(report.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MobilekitError(f"parity report {report} is not readable JSON ({exc}): run mobilekit parity again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("artefacts"), list):
        raise MobilekitError(f"{report} is not a mobilekit parity report (it has no 'artefacts' list)")
    return doc


def verdict(report: Path, artefact: Path) -> Verdict:
    """The verdict of ``report`` on ``artefact`` (matched by name and sha256)."""
    doc = read_report(report)
    if doc is None:
        return Verdict(artefact.name, report, UNCHECKED, f"no parity report {report}")
    entry = next((a for a in doc["artefacts"] if isinstance(a, dict) and a.get("file") == artefact.name), None)
    if entry is None:
        return Verdict(artefact.name, report, UNCHECKED, f"parity report {report} does not cover {artefact.name}")
    if entry.get("sha256") != sha256_file(artefact):
        return Verdict(artefact.name, report, UNCHECKED, f"parity report {report} checked another {artefact.name} (its sha256 differs: exported again since?)")
    kept = {"source": report.name, "images": doc.get("images"), **{k: entry.get(k) for k in ENTRY_KEYS}}
    if not entry.get("passed"):
        return Verdict(artefact.name, report, FAILED, f"parity report {report} fails {artefact.name}: {entry.get('verdict')}", kept)
    return Verdict(artefact.name, report, PASSED, f"parity report {report} passes {artefact.name}: {entry.get('verdict')}", kept)


def require_verified(found: Verdict, export_dir: Path) -> None:
    """Raise :class:`CheckFailed` (exit status 1) unless ``found`` passed, saying how to check the file."""
    if found.passed:
        return
    how = (
        "pass --unverified to package it anyway"
        if found.status == FAILED
        else f"check it first (mobilekit parity {export_dir} --images PHOTOS writes {export_report_path(export_dir)}), or pass --unverified to package it anyway"
    )
    raise CheckFailed(f"{found.file} is not packaged: {found.reason}; {how}")


def verification_block(found: Verdict) -> dict:
    """``model_meta.json``'s ``verification``: whether the packaged file passed parity, on what report; a
    file that did not was packaged with ``--unverified`` (otherwise :func:`require_verified` refused it)."""
    reason = found.shipped_reason if found.passed else f"Packaged with --unverified: {found.shipped_reason}"
    return {"verified": found.passed, "parity": found.status, "report": found.report.name, "reason": reason}
