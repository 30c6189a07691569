"""Notebook 01's record and checks in one call (the notebook shows the data; this keeps it honest)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..patchset import KIND_RANDOM, KIND_VESSEL
from .dataset import SiteDataset

__all__ = ["record_and_check"]


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
    labels, vessel-centred patches centred on a vessel and in the profile's share, vessels 0.2-15 %
    of the brain, vessel-centred patches holding more vessel than random ones, and a second
    preparation served from the cache.
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
    # vessels are a small part of the brain (1-3 % in real brains); outside 0.2-15 % something is wrong
    assert 0.002 < fraction_brain["A"] < 0.15 and 0.002 < fraction_brain["B"] < 0.15, fraction_brain
    # with correct centring the ratio is well above 1; a sampling bug would bring it to about 1
    assert train_a.label[vessel_idx].mean() > 1.2 * train_a.label[random_idx].mean()
    if phantom:
        assert not np.allclose(spacing["A"], spacing["B"]), f"the phantom's sites must differ in voxel size: {spacing}"
    assert all(ds.from_cache for ds in reprepared), "a second preparation must come from the cache"
    return recorded
