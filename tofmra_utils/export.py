"""``tofmra export``: the shareable form of one GAN's synthetic set.

An export folder holds

* the synthetic pairs: ``synthetic.npz`` in the patch-set format (:mod:`tofmra_utils.patchset`;
  every subject ``"synthetic"``, every centre -1, a provenance record without paths), or with
  ``fmt="nifti"`` ``images.nii.gz`` and ``labels.nii.gz``, the pairs stacked along z (P, P, N)
  with a 1 mm identity affine and fresh headers;
* ``datasheet.json``: what made the set, the training data described by counts only, the
  privacy audit's and the fidelity numbers, intended use, licence and limits;
* ``DATASHEET.md``: the same, for people.

What never leaves the run folder: subject ids, patch centres, file paths, affines and header
fields of the source volumes, the critic's or generator's weights. The datasheet is built from an
allow-list of fields, and before the folder appears every file in it is searched for every
source subject id and for the run folder's path (:func:`find_leaks`); a hit aborts the export.

The export refuses (:class:`ExportRefused`) a set whose audit flags more copies than the
profile's ``privacy.max_copy_rate``, unless forced; a forced export says so in its datasheet.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .io import DataError, read_json, write_json
from .patchset import PatchSet
from .profiles import GAN_NAMES, get_profile
from .runs import RunPaths

__all__ = ["ExportRefused", "EXPORT_FORMATS", "export_synthetic", "find_leaks", "datasheet_markdown"]

#: File formats of the exported pairs.
EXPORT_FORMATS: tuple[str, ...] = ("npz", "nifti")

#: Fields of the generator's datasheet (``gan/generate.py``) safe to share: numbers and rules, no paths.
_SHAREABLE_FIELDS = ("gan", "generator_step", "generator_total_steps", "n", "patch_size", "threshold", "threshold_rule",
                     "label_rule", "image_range", "image_scaling", "weights", "vessel_fraction", "profile")

INTENDED_USE = ("Training and testing vessel-segmentation methods for TOF-MRA (2D axial patches with vessel labels), "
                "teaching, and method development where the patients' images cannot be shared. Not for diagnosis, "
                "not for estimating the prevalence or shape of any patient's vessels, not as a test set that stands "
                "in for real patients.")
LIMITS = ("An audit is evidence, not a proof of anonymity. It measured copies by nearest-neighbour distance in the "
          "feature spaces listed and two membership-inference attacks on the patches sampled; other attacks, other "
          "feature spaces or more samples may find what these did not. The synthetic pairs reflect the training "
          "site's scanner and protocol and inherit its biases; their labels come from the generator, not from a "
          "rater.")
DEFAULT_LICENCE = "not set: the data holder chooses a licence (tofmra export --licence) before sharing"


class ExportRefused(RuntimeError):
    """The audit flags copies above the profile's limit (``tofmra export`` exits 1)."""


def _strings(obj: Any) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _source_subjects(paths: RunPaths) -> tuple[list[str], list[str], dict[str, int]]:
    """Source subject ids and file paths of the run's real data, and the training counts (patches, subjects)."""
    ids: set[str] = set()
    files: set[str] = set()
    counts = {"training_patches": 0, "training_subjects": 0}
    for site in ("A", "B"):
        site_paths = paths.site(site)
        for split in ("train", "val", "test"):
            file = site_paths.patch_file(split)
            if file.exists():
                ps = PatchSet.load(file)
                ids.update(str(s) for s in np.unique(ps.subject))
                if site == "A" and split == "train":
                    counts = {"training_patches": len(ps), "training_subjects": int(len(np.unique(ps.subject)))}
        dataset_file = site_paths.dataset_file
        if dataset_file.exists():
            sheet = read_json(dataset_file)
            if isinstance(sheet, dict):
                for split_ids in (sheet.get("splits") or {}).values():
                    ids.update(str(s) for s in split_ids)
                ids.update(str(s) for s in (sheet.get("subjects") or {}))
                files.update(s for s in _strings([sheet.get("subjects"), sheet.get("inputs")]) if "/" in s)
    ids.discard("synthetic")
    return sorted(ids), sorted(files), counts


def find_leaks(folder: str | os.PathLike[str], needles: list[str]) -> list[str]:
    """``"file: needle"`` for every needle (subject id, path) found in any file under ``folder``.

    Searches the raw bytes, and the arrays of ``.npz`` files as text, so ids inside string arrays
    (stored as UTF-32) are found too.
    """
    hits = []
    for file in sorted(Path(folder).rglob("*")):
        if not file.is_file():
            continue
        blobs = [file.read_bytes()]
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as z:
                blobs += [" ".join(map(str, np.ravel(z[k]))).encode() for k in z.files if z[k].dtype.kind in "US"]
        for needle in needles:
            if needle and any(needle.encode() in blob for blob in blobs):
                hits.append(f"{file.name}: {needle}")
    return hits


def _write_pairs(ps: PatchSet, out: Path, fmt: str, gan: str) -> list[str]:
    if fmt == "npz":
        PatchSet.synthetic(ps.image, ps.label, meta={"source": "gan", "gan": gan}).save(out / "synthetic.npz")
        return ["synthetic.npz"]
    import nibabel as nib

    for name, data in (("images.nii.gz", ps.image.astype(np.float32)), ("labels.nii.gz", ps.label.astype(np.uint8))):
        img = nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(data, 0, -1)), np.eye(4))
        img.header["descrip"] = b"tofmra synthetic pairs"
        nib.save(img, str(out / name))
    return ["images.nii.gz", "labels.nii.gz"]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def datasheet_markdown(sheet: dict[str, Any]) -> str:
    """``DATASHEET.md``: the export's datasheet for people."""
    made, training, audit = sheet["generated_by"], sheet["training_data"], sheet["privacy_audit"]
    lines = [f"# Synthetic TOF-MRA patch pairs ({made['gan']})", "",
             f"{sheet['n']} synthetic image/label pairs of {sheet['patch_size']} x {sheet['patch_size']} px, "
             f"exported {sheet['exported']} as {', '.join(sheet['files'])}.", "",
             "## What made it", ""]
    lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in made.items()]
    lines += ["", "## Training data (counts only)", ""]
    lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in training.items()]
    lines += ["", "## Privacy audit", "",
              f"Primary feature space: {audit['primary_features']}; export limit on the copy rate: "
              f"{_fmt(audit['max_copy_rate'])}; {audit['calibration']}.", "",
              "| features | copy rate | NN ratio | attack AUC | control AUC | patient AUC | white-box AUC |",
              "|---|---|---|---|---|---|---|"]
    for space, a in audit["by_features"].items():
        lines.append(f"| {space} | {_fmt(a['copy_rate'])} | {_fmt(a['nn_ratio'])} | {_fmt(a['mia_auc'])} "
                     f"{_fmt(a.get('mia_auc_interval'))} | {_fmt(a['mia_auc_control'])} | {_fmt(a.get('mia_subject_auc'))} "
                     f"| {_fmt(a.get('whitebox_auc'))} |")
    lines += ["", "## Fidelity and diversity (against the training patches)", "",
              "| features | set | FD | KD | precision | recall | density | coverage |", "|---|---|---|---|---|---|---|---|"]
    for space, a in audit["by_features"].items():
        ref = a.get("reference_real_vs_real") or {}
        lines.append(f"| {space} | synthetic | {_fmt(a['fd'])} | {_fmt(a['kd'])} | {_fmt(a['precision'])} | "
                     f"{_fmt(a['recall'])} | {_fmt(a['density'])} | {_fmt(a['coverage'])} |")
        if ref:
            lines.append(f"| {space} | real held-out (reference) | {_fmt(ref.get('fd'))} | {_fmt(ref.get('kd'))} | "
                         f"{_fmt(ref.get('precision'))} | {_fmt(ref.get('recall'))} | {_fmt(ref.get('density'))} | "
                         f"{_fmt(ref.get('coverage'))} |")
    lines += ["", "## Intended use", "", sheet["intended_use"], "", "## Licence", "", sheet["licence"], "",
              "## Limits", "", sheet["limits"], ""]
    if sheet.get("forced"):
        lines += ["## Forced export", "", f"**This set was exported with --force although its audit flagged copies:** "
                  f"copy rate {_fmt(audit['copy_rate'])} > limit {_fmt(audit['max_copy_rate'])}.", ""]
    return "\n".join(lines)


def _audit_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The shareable part of a datasheet's audit (numbers only)."""
    primary = entry["primary_features"]
    keep = ("copy_rate", "nn_ratio", "mia_auc", "mia_auc_control", "fd", "kd", "precision", "recall", "density",
            "coverage", "n_synthetic", "n_train", "n_holdout", "features", "copy_threshold", "mia_auc_interval",
            "mia_subject_auc", "mia_member_subjects", "mia_nonmember_subjects", "whitebox_auc", "whitebox_auc_interval",
            "whitebox_subject_auc", "reference_real_vs_real")
    by = {space: {k: a.get(k) for k in keep} for space, a in entry["by_features"].items()}
    return {"date": entry.get("date"), "primary_features": primary, "max_copy_rate": entry["max_copy_rate"],
            "copy_rate": by[primary]["copy_rate"], "copy_flagged": entry["copy_flagged"],
            "calibration": entry.get("calibration"), "flips_searched": entry.get("flips_searched"),
            "by_features": by, "limits": entry.get("limits")}


def export_synthetic(run_dir: str | os.PathLike[str], gan: str, out: str | os.PathLike[str], fmt: str = "npz",
                     force: bool = False, licence: str = DEFAULT_LICENCE) -> Path:
    """Write GAN ``gan``'s synthetic set of ``run_dir`` as a shareable folder ``out`` (see the module docstring).

    Parameters
    ----------
    gan
        Name of the folder ``synthetic/<gan>/`` (one of :data:`~tofmra_utils.profiles.GAN_NAMES`, or
        another set with an audited datasheet).

    Raises
    ------
    DataError
        A bad GAN name or unknown format, missing synthetic set or datasheet, no audit or a stale one, ``out``
        exists and is not empty.
    ExportRefused
        The audit's copy rate exceeds the profile's ``privacy.max_copy_rate`` and ``force`` is off.
    RuntimeError
        A source subject id or path was found in the files about to be exported (nothing is written).
    """
    from .privacy.datasheet import read_audit

    paths = RunPaths(Path(run_dir))
    # Any synthetic set of the run folder (the three GANs, or e.g. a DP-GAN's), named plainly.
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", gan):
        raise DataError(None, f"bad GAN name {gan!r}: one of {', '.join(GAN_NAMES)} or another synthetic/<name>/ folder")
    if fmt not in EXPORT_FORMATS:
        raise DataError(None, f"unknown format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(out, "already exists and is not an empty folder: choose a new export folder")
    patches_file, datasheet_file = paths.synthetic_file(gan), paths.datasheet_file(gan)
    synthetic = PatchSet.load(patches_file)
    source_sheet = read_json(datasheet_file)
    entry = read_audit(datasheet_file, patches_file)
    profile = get_profile(str(source_sheet.get("profile") or entry.get("profile") or "course"))
    limit = float(profile.privacy.max_copy_rate)
    audit = _audit_summary({**entry, "max_copy_rate": limit,
                            "copy_flagged": entry["by_features"][entry["primary_features"]]["copy_rate"] > limit})
    if audit["copy_flagged"] and not force:
        raise ExportRefused(f"{datasheet_file}: the audit flags copies: copy rate {audit['copy_rate']:.3g} in "
                            f"{audit['primary_features']} space exceeds the {profile.name} profile's limit {limit:g}; "
                            "nothing exported (--force exports anyway and records it in the datasheet)")
    subjects, source_files, counts = _source_subjects(paths)
    sheet = {
        "dataset": "synthetic TOF-MRA image/label patch pairs",
        "n": len(synthetic), "patch_size": synthetic.patch_size,
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "generated_by": {k: source_sheet[k] for k in _SHAREABLE_FIELDS if k in source_sheet},
        "training_data": {**counts, "description": "real TOF-MRA patches of site A (counts only; no ids, positions or files)"},
        "privacy_audit": audit,
        "intended_use": INTENDED_USE, "licence": licence, "limits": LIMITS,
        "forced": bool(force and audit["copy_flagged"]),
        "contains_source_subject_data": False,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        sheet["files"] = _write_pairs(synthetic, staging, fmt, gan)
        write_json(staging / "datasheet.json", sheet)
        (staging / "DATASHEET.md").write_text(datasheet_markdown(sheet))
        needles = subjects + source_files + [str(paths.root.resolve()), str(Path(run_dir)), str(patches_file),
                                             str(datasheet_file)]
        leaks = find_leaks(staging, [n for n in needles if n not in (".", "")])
        if leaks:
            raise RuntimeError("export aborted, source data found in the files: " + "; ".join(leaks))
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out
