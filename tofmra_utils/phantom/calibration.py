"""One subject's vessel tree: its random parameters, and branch lengths calibrated to a vessel volume.

Root radii are about 2.4 mm for a full-size brain (the ``paper`` shape); smaller fields of view
are miniature brains whose root radii shrink with the square root of the size (course: about
1.7 mm, smoke about 1.2 mm), so the vessel volume stays at 1-3 % of the brain as in real
TOF-MRA. The branch lengths are calibrated per subject so the labelled vessels fill a random
target fraction of the brain: the tree is regrown from the same random stream with longer or
shorter branches until its volume is close to the target (:func:`grow_vessel_tree`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .brain import brain_geometry, size_factor, slab_brain_volume
from .growth import GrowthParams, TreeGrower
from .sites import PROTOCOLS, field_of_view_mm, labelled_radius_of
from .tree import VesselTree, annotate_transit

__all__ = ["R_MIN_MM", "ROOT_VELOCITY_MM_S", "CALIBRATION_ROUNDS", "grow_vessel_tree"]

#: Thinnest vessel radius grown (mm): well below half a voxel of either site (sub-voxel vessels).
R_MIN_MM = 0.12
#: Mean blood velocity in the root arteries of a full-size brain (mm/s; ICA about 30-40 cm/s).
ROOT_VELOCITY_MM_S = 350.0
#: Growths of a tree while calibrating its branch lengths to the target vessel volume.
CALIBRATION_ROUNDS = 5


def grow_vessel_tree(rng: np.random.Generator, volume_shape: Sequence[int], target_fraction: float | None = None,
                     labelled_radius_mm: float | None = None) -> VesselTree:
    """Grow one subject's arterial tree in world mm for the field of view of a site-A ``volume_shape``.

    Branch lengths are calibrated (up to :data:`CALIBRATION_ROUNDS` growths with the same random
    stream; the closest one is kept) so the vessels thicker than ``labelled_radius_mm`` fill
    ``target_fraction`` of the brain volume. Partial volume and overlaps leave about three
    quarters of that volume labelled, so the default target, drawn in [2.2 %, 2.8 %], gives
    labels of about 1.7-2.5 % of the brain.

    Parameters
    ----------
    rng
        Source of all randomness.
    volume_shape
        Site A shape (x, y, z) in voxels; sets the field of view.
    target_fraction
        Fraction of the brain volume to fill with vessels thicker than ``labelled_radius_mm``.
    labelled_radius_mm
        Radius (mm) below which a vessel hardly reaches the label's 0.5 voxel fraction (about a
        third of the voxel size, see :func:`~tofmra_utils.phantom.sites.labelled_radius_of`);
        default: site A's.

    Returns
    -------
    VesselTree
        With the transit times annotated (:func:`~tofmra_utils.phantom.tree.annotate_transit`).
    """
    fov = field_of_view_mm(volume_shape)
    brain = brain_geometry(fov)
    size = size_factor(fov)
    g = float(rng.uniform(2.5, 3.0))
    # At least 0.9 mm (1.5 site-A voxels), so tiny test volumes still hold a tree of a few generations.
    root_radius = max(2.4 * size, 0.9) * float(rng.uniform(0.92, 1.08))
    tortuosity = float(rng.uniform(0.22, 0.32))
    target = float(rng.uniform(0.022, 0.028)) if target_fraction is None else float(target_fraction)
    slab_brain_mm3 = slab_brain_volume(brain)
    labelled_radius = labelled_radius_mm if labelled_radius_mm is not None else labelled_radius_of(PROTOCOLS["A"])
    growth_state = rng.bit_generator.state
    length_per_radius = 9.0
    best: tuple[float, VesselTree] | None = None
    for _ in range(CALIBRATION_ROUNDS):
        rng.bit_generator.state = growth_state  # the same random stream: only the lengths change
        params = GrowthParams(murray_exponent=g, length_per_radius=length_per_radius, tortuosity=tortuosity,
                              root_radius=root_radius, r_min=R_MIN_MM)
        branches = TreeGrower(rng, brain, params).grow()
        tree = VesselTree(branches=branches, murray_exponent=g, root_velocity_mm_s=ROOT_VELOCITY_MM_S * size,
                          root_radius_mm=root_radius, inflow_z_mm=brain.z_bottom)
        reached = max(tree.vessel_volume_mm3(labelled_radius) / slab_brain_mm3, 1e-6)
        miss = abs(math.log(reached / target))
        if best is None or miss < best[0]:
            best = (miss, tree)
        if miss < 0.1:
            break
        # Longer branches leave the brain more often, so the volume grows less than linearly.
        length_per_radius *= float(np.clip(target / reached, 0.5, 2.5))
    assert best is not None
    tree = best[1]
    annotate_transit(tree)
    return tree
