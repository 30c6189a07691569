"""Notebook 01's record and checks in one call (the notebook shows the data; this keeps it honest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..patchset import KIND_RANDOM, KIND_VESSEL
from .dataset import SiteDataset

__all__ = ["record_and_check", "user_data_warnings", "vessel_statistics", "phantom_beside_reality", "real_crop_dir"]


def record_and_check(
    ctx: Any, site_a: SiteDataset, site_b: SiteDataset, table: pd.DataFrame, reprepared: list[SiteDataset],
    seconds: tuple[float, float], phantom: bool,
) -> dict[str, Any]:
    """Record the prepared data sets' key facts for ``summary.json`` and check them.

    Parameters
    ----------
    ctx
        The notebook's context.
    site_a, site_b
        The prepared sites.
    table
        Both sites' split tables, with a ``site`` column (``vessel_fraction`` and ``spacing`` per subject).
    reprepared
        The sites prepared a second time (must come from the cache).
    seconds
        Preparation wall time of sites A and B (s).
    phantom
        Whether both sites are the built-in phantom (then their voxel sizes must differ).

    Checks (``AssertionError`` with the reason): every subject in exactly one split, no test
    subject in the training patches, the profile's patch counts, sizes and [-1, 1] range, binary
    labels, vessel-centred patches centred on a vessel and in the profile's share, vessel-centred
    patches holding more vessel than random ones, and a second preparation served from the cache.
    Checks that hold only for the phantom (vessels 0.2-15 % of the brain, two sites of different
    voxel size) stop only the phantom; for user data an unusual value is a warning with its number
    (:func:`user_data_warnings`), recorded as ``warnings`` and printed.
    """
    d = ctx.profile.data
    train_a, val_a, pool_b = site_a.patches("train"), site_a.patches("val"), site_b.patches("train")
    vessel_idx, random_idx = np.flatnonzero(train_a.kind == KIND_VESSEL), np.flatnonzero(train_a.kind == KIND_RANDOM)
    fraction_brain = {s: float(t.vessel_fraction.mean()) for s, t in table.groupby("site")}
    spacing = {s: [round(float(v), 3) for v in np.median(np.array(t.spacing.tolist()), axis=0)] for s, t in table.groupby("site")}
    recorded = ctx.record(
        source_a="phantom" if phantom else "user data", source_b="phantom" if phantom else "user data",
        subjects_a={k: len(v) for k, v in site_a.splits.items()}, subjects_b={k: len(v) for k, v in site_b.splits.items()},
        patch_size=train_a.patch_size, patches_train_a=len(train_a), patches_val_a=len(val_a), patches_pool_b=len(pool_b),
        vessel_fraction_brain_a=round(fraction_brain["A"], 5), vessel_fraction_brain_b=round(fraction_brain["B"], 5),
        vessel_pixel_fraction_train_patches_a=round(train_a.vessel_fraction(), 5),
        vessel_pixel_fraction_vessel_patches_a=round(float(train_a.label[vessel_idx].mean()), 5),
        vessel_pixel_fraction_random_patches_a=round(float(train_a.label[random_idx].mean()), 5),
        spacing_a_mm=spacing["A"], spacing_b_mm=spacing["B"],
        prepare_seconds_a=round(seconds[0], 2), prepare_seconds_b=round(seconds[1], 2),
        from_cache=bool(site_a.from_cache and site_b.from_cache),
    )
    if not phantom:
        found = user_data_warnings(ctx.profile, site_a, site_b, fraction_brain)
        recorded = ctx.record(warnings=found)
        for line in found:
            print(f"warning: {line}")
    for ds in (site_a, site_b):
        ids = [s for split in ("train", "val", "test") for s in ds.splits[split]]
        assert len(ids) == len(set(ids)) == len(ds.subjects), f"site {ds.site}: a subject is in two splits"
    assert set(train_a.subject) == set(site_a.splits["train"]) and set(val_a.subject) == set(site_a.splits["val"])
    assert not set(train_a.subject) & set(site_a.splits["test"]), "test subjects must not give training patches"
    assert len(site_b.splits["val"]) == d.site_b_n_val and len(site_b.splits["test"]) == d.site_b_n_test
    centre = d.patch_size // 2
    for name, ps, n_subjects in (("A train", train_a, len(site_a.splits["train"])), ("A val", val_a, len(site_a.splits["val"])),
                                 ("B pool", pool_b, len(site_b.splits["train"]))):
        assert ps.image.shape == (n_subjects * d.patches_per_subject, d.patch_size, d.patch_size), (name, ps.image.shape)
        assert ps.image.min() >= -1.0 and ps.image.max() <= 1.0, name
        assert set(np.unique(ps.label)) <= {0, 1}, name
        assert (ps.label[ps.kind == KIND_VESSEL, centre, centre] == 1).all(), f"{name}: a vessel-centred patch misses its vessel"
        assert abs((ps.kind == KIND_VESSEL).mean() - d.vessel_patch_fraction) < 0.01, name
    if phantom:
        # the phantom's vessels are a small part of its brain; outside 0.2-15 % its generator is broken
        assert 0.002 < fraction_brain["A"] < 0.15 and 0.002 < fraction_brain["B"] < 0.15, fraction_brain
    # with correct centring the ratio is well above 1; a sampling bug would bring it to about 1
    assert train_a.label[vessel_idx].mean() > 1.2 * train_a.label[random_idx].mean()
    if phantom:
        assert not np.allclose(spacing["A"], spacing["B"]), f"the phantom's sites must differ in voxel size: {spacing}"
    assert all(ds.from_cache for ds in reprepared), "a second preparation must come from the cache"
    return recorded


#: Share of the brain labelled vessel outside which user data get a warning (real labels are sparse:
#: a few tenths of a percent in the ICBM sample; a share over 15 % suggests a wrong mask or label).
USUAL_VESSEL_FRACTION = (0.0005, 0.15)


def user_data_warnings(profile: Any, site_a: SiteDataset, site_b: SiteDataset, fraction_brain: dict[str, float]) -> list[str]:
    """Warnings, each with its number, about user data that are valid but unusual.

    Unusual vessel share of the brain (outside :data:`USUAL_VESSEL_FRACTION`), fewer subjects
    than the profile's study design, and what preparation itself found per subject (unknown or
    1 mm voxel size, 8-bit input: ``subject_info[...]["warnings"]``), plus which masks were
    computed and which volumes were reoriented.
    """
    d = profile.data
    found = []
    lo, hi = USUAL_VESSEL_FRACTION
    for site, value in fraction_brain.items():
        if not lo <= value <= hi:
            found.append(f"site {site}: vessels are {100 * value:.3f} % of the brain (usual {100 * lo:g}-{100 * hi:g} %): "
                         "check the labels and the brain masks")
    for ds, wanted, name in ((site_a, d.site_a_subjects, "site_a_subjects"), (site_b, d.site_b_subjects, "site_b_subjects")):
        if len(ds.subjects) < wanted:
            found.append(f"site {ds.site}: {len(ds.subjects)} subjects, profile {profile.name!r} is designed for {wanted} "
                         f"({name}); the splits still work, the numbers are noisier")
        by_warning: dict[str, list[str]] = {}
        for sid, si in ds.info["subject_info"].items():
            for w in si.get("warnings", []):
                by_warning.setdefault(w, []).append(sid)
        found += [f"site {ds.site}, {len(ids)} of {len(ds.subjects)} subjects ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}): {w}"
                  for w, ids in by_warning.items()]
        methods = sorted({si.get("mask_method", "?") for si in ds.info["subject_info"].values() if si.get("mask_computed")})
        if methods:
            found.append(f"site {ds.site}: brain masks computed ({', '.join(methods)}), not given")
        turned = sorted({si["orientation"] for si in ds.info["subject_info"].values() if "orientation" in si})
        if turned:
            found.append(f"site {ds.site}: volumes reoriented to canonical axial ({', '.join(turned)})")
    return found


# ============================================================================ phantom beside reality
def real_crop_dir() -> Path:
    """The committed real TOF-MRA crop (``tests/fixtures/real_crop``: images/, labels/, masks/, licence in README.md)."""
    from ..runs import repo_root

    return Path(repo_root()) / "tests" / "fixtures" / "real_crop"


def vessel_statistics(image: np.ndarray, label: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, Any]:
    """What a vessel label says about a volume, for the phantom and a real scan alike.

    Parameters
    ----------
    image, label, mask
        (X, Y, Z) intensities, 0/1 vessel label, 0/1 brain mask.
    spacing
        Voxel size in mm along (x, y, z).

    Returns
    -------
    dict with ``vessel_fraction_brain`` (labelled share of the brain mask), ``label_outside_mask``
    (share of labelled voxels outside the mask), ``contrast`` (median vessel intensity over median
    non-vessel brain intensity), ``radius_mm`` (radii along the centreline: the label's Euclidean
    distance transform, in mm, at its local maxima) and ``radius_median_mm``,
    ``intensity_vessel`` / ``intensity_tissue`` (brain intensities scaled by the brain's 99.5th
    percentile, for histograms).
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    vessel, brain = np.asarray(label) > 0, np.asarray(mask) > 0
    scale = float(np.percentile(image[brain], 99.5)) or 1.0
    inside, tissue = image[vessel & brain] / scale, image[brain & ~vessel] / scale
    distance = ndimage.distance_transform_edt(vessel, sampling=spacing)
    ridge = vessel & (distance >= ndimage.maximum_filter(distance, size=3))
    radius = distance[ridge]
    return {
        "vessel_fraction_brain": float((vessel & brain).sum() / max(1, brain.sum())),
        "label_outside_mask": float((vessel & ~brain).sum() / max(1, vessel.sum())),
        "contrast": float(np.median(inside) / max(1e-6, float(np.median(tissue)))),
        "radius_mm": radius,
        "radius_median_mm": float(np.median(radius)) if radius.size else float("nan"),
        "intensity_vessel": inside,
        "intensity_tissue": tissue,
    }


def phantom_beside_reality(image_a: Any, label_a: Any, mask_a: Any) -> tuple[pd.DataFrame, dict[str, dict[str, Any]], dict[str, Any]]:
    """The phantom subject and the committed real crop side by side.

    Parameters
    ----------
    image_a, label_a, mask_a
        A phantom subject's :class:`~tofmra_utils.io.Volume` objects (``SiteDataset.load_subject``).

    Returns
    -------
    table, stats, real
        One row per source (vessel share of the brain in %, labelled voxels outside the mask in %,
        vessel/tissue contrast, median centreline radius in mm, voxel size), the
        :func:`vessel_statistics` of each, and the real crop's volumes (``image``, ``label``,
        ``mask`` arrays and ``spacing``).
    """
    from .dataset import Subject, load_subject_volumes

    folder = real_crop_dir()
    subject = Subject("real", folder / "images" / "icbm0590.nii.gz", folder / "labels" / "icbm0590.nii.gz",
                      folder / "masks" / "icbm0590.nii.gz")
    image_r, label_r, mask_r, _ = load_subject_volumes(subject)
    real = {"image": image_r.data, "label": label_r.data, "mask": mask_r.data, "spacing": image_r.spacing}
    stats = {
        "phantom (site A)": vessel_statistics(image_a.data, label_a.data, mask_a.data, image_a.spacing),
        "real crop (ICBM, Circle of Willis)": vessel_statistics(image_r.data, label_r.data, mask_r.data, image_r.spacing),
    }
    spacings = {"phantom (site A)": image_a.spacing, "real crop (ICBM, Circle of Willis)": image_r.spacing}
    table = pd.DataFrame([
        {"source": name, "vessel % of brain": round(100 * s["vessel_fraction_brain"], 3),
         "label outside mask %": round(100 * s["label_outside_mask"], 1), "vessel/tissue contrast": round(s["contrast"], 2),
         "median radius (mm)": round(s["radius_median_mm"], 2), "voxel (mm)": " x ".join(f"{v:.2f}" for v in spacings[name])}
        for name, s in stats.items()
    ])
    return table, stats, real
