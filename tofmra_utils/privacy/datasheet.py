"""The audit's entry in a synthetic set's ``datasheet.json`` (written by notebook 07, read by ``tofmra export``)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..io import DataError, read_json, write_json
from .audit import AuditResult
from .memorization import CALIBRATION_PERCENTILE

__all__ = ["AUDIT_KEY", "file_sha256", "audit_entry", "write_audit", "read_audit"]

#: Key of the audit in ``datasheet.json``.
AUDIT_KEY = "privacy_audit"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, hex (ties an audit to the exact synthetic set it measured)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def audit_entry(audits: dict[str, AuditResult], patches_sha256: str, primary: str, max_copy_rate: float,
                seed: int, flips: bool) -> dict[str, Any]:
    """The datasheet entry of audits in several feature spaces of one synthetic set.

    Counts and numbers only: nothing in it names a subject, a patch position or a file path.
    """
    if primary not in audits:
        raise ValueError(f"primary feature space {primary!r} was not audited (have {', '.join(audits)})")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "patches_sha256": patches_sha256,
        "primary_features": primary,
        "max_copy_rate": float(max_copy_rate),
        "copy_flagged": bool(audits[primary].copy_rate > max_copy_rate),
        "calibration": (f"a synthetic pair is a copy when nearer to a training patch than the {CALIBRATION_PERCENTILE:g}st "
                        "percentile of held-out-to-training nearest distances"),
        "flips_searched": bool(flips),
        "seed": int(seed),
        "by_features": {space: result.details() for space, result in audits.items()},
        "limits": ("An audit is evidence, not a proof of anonymity: it tests the attacks and feature spaces listed, "
                   "on the patches sampled, and says nothing about attacks not run."),
    }


def write_audit(datasheet: str | os.PathLike[str], entry: dict[str, Any]) -> Path:
    """Put ``entry`` under :data:`AUDIT_KEY` in an existing ``datasheet.json`` (atomically)."""
    path = Path(datasheet)
    sheet = read_json(path)
    if not isinstance(sheet, dict):
        raise DataError(path, "datasheet is not a JSON object")
    sheet[AUDIT_KEY] = entry
    return write_json(path, sheet)


def read_audit(datasheet: str | os.PathLike[str], patches: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The audit entry of a datasheet; with ``patches``, checked to be of that very file.

    Raises
    ------
    DataError
        No audit in the datasheet, or an audit of a different synthetic set (stale).
    """
    path = Path(datasheet)
    sheet = read_json(path)
    entry = sheet.get(AUDIT_KEY) if isinstance(sheet, dict) else None
    if not entry:
        raise DataError(path, "no privacy audit in the datasheet: run notebook 07_privacy_audit first")
    if patches is not None and entry.get("patches_sha256") != file_sha256(patches):
        raise DataError(path, f"the privacy audit is of another synthetic set than {patches} (regenerated since?): "
                              "rerun notebook 07_privacy_audit")
    return entry
