"""The synthetic TOF-MRA phantom: vessel tree, partial volume, signal, sites, files, cache.

Volumes are made once per test module (smoke shape, and the course shape where the property is
a promise about the course data) and shared by the tests through a small cache.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tofmra_utils.io import check_same_geometry, load_volume
from tofmra_utils.phantom import (
    PROTOCOLS,
    R_MIN_MM,
    PhantomVolume,
    blood_signal,
    field_of_view_mm,
    grow_vessel_tree,
    labelled_radius_of,
    make_phantom,
    rasterize_vessels,
    site_affine,
    site_shape,
    subject_seed,
    write_phantom_dataset,
)

SMOKE = (64, 64, 24)
COURSE = (128, 128, 48)
_cache: dict[tuple, PhantomVolume] = {}


def phantom(site: str, seed: int, shape: tuple[int, int, int]) -> PhantomVolume:
    key = (site, seed, shape)
    if key not in _cache:
        _cache[key] = make_phantom(site, seed, shape)
    return _cache[key]


def _tissue(ph: PhantomVolume) -> np.ndarray:
    """Brain voxels at least two voxels away from any label voxel."""
    return (ph.mask > 0) & ~ndimage.binary_dilation(ph.label > 0, iterations=2)


# ----------------------------------------------------------------------------- geometry and sites
def test_site_shapes_cover_the_same_field_of_view_and_affines_are_centred():
    assert site_shape("A", COURSE) == COURSE
    shape_b = site_shape("B", COURSE)
    assert shape_b == (96, 96, 36)
    fov = field_of_view_mm(COURSE)
    np.testing.assert_allclose(np.asarray(shape_b) * PROTOCOLS["B"].spacing, fov, atol=max(PROTOCOLS["B"].spacing))
    for site, shape in (("A", COURSE), ("B", shape_b)):
        aff = site_affine(site, shape)
        np.testing.assert_allclose(np.diag(aff)[:3], PROTOCOLS[site].spacing)
        assert np.count_nonzero(aff[:3, :3] - np.diag(np.diag(aff)[:3])) == 0  # RAS, no rotation
        centre = aff @ np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2, 1.0])
        np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)


def test_sites_differ_in_spacing_shape_contrast_noise_and_bias():
    a, b = PROTOCOLS["A"], PROTOCOLS["B"]
    assert all(hb > ha for ha, hb in zip(a.spacing, b.spacing))
    assert a.vessel_contrast > b.vessel_contrast
    assert b.noise_sigma > a.noise_sigma and b.bias_strength > a.bias_strength
    assert b.saturation_time_s < a.saturation_time_s  # larger flip angle: blood saturates faster
    pa, pb = phantom("A", 0, SMOKE), phantom("B", 0, SMOKE)
    assert pa.image.shape == SMOKE and pb.image.shape == site_shape("B", SMOKE) != SMOKE
    assert pa.spacing == a.spacing and pb.spacing == b.spacing
    # Measured: noise relative to tissue signal is larger at site B.
    rel_noise = []
    for ph in (pa, pb):
        background = ~ndimage.binary_dilation(ph.mask > 0, iterations=3)
        rel_noise.append(ph.image[background].std() / ph.image[_tissue(ph)].mean())
    assert rel_noise[1] > 1.3 * rel_noise[0]


def test_background_is_rician_magnitude_noise():
    """Outside the brain the signal is 0: the magnitude of complex Gaussian noise is Rayleigh distributed."""
    for site in "AB":
        ph = phantom(site, 0, SMOKE)
        background = ph.image[~ndimage.binary_dilation(ph.mask > 0, iterations=3)]
        rayleigh_mean_over_std = math.sqrt(math.pi / 2) / math.sqrt(2 - math.pi / 2)  # 1.913
        assert background.min() >= 0
        assert abs(background.mean() / background.std() - rayleigh_mean_over_std) < 0.1
        sigma = PROTOCOLS[site].noise_sigma * PROTOCOLS[site].intensity_scale
        assert abs(background.mean() / (sigma * math.sqrt(math.pi / 2)) - 1) < 0.1


# ----------------------------------------------------------------------------- labels and signal
@pytest.mark.parametrize("shape", [SMOKE, COURSE], ids=["smoke", "course"])
@pytest.mark.parametrize("site", ["A", "B"])
def test_vessels_fill_1_to_3_percent_of_the_brain(site, shape):
    seeds = (0, 1) if shape == SMOKE else (0,)
    for seed in seeds:
        ph = phantom(site, seed, shape)
        fraction = ph.label.sum() / ph.mask.sum()
        assert 0.01 <= fraction <= 0.03, (site, seed, shape, fraction)
        assert ph.stats["vessel_fraction"] == pytest.approx(fraction)


def test_label_is_inside_the_mask_and_brighter_than_its_neighbours():
    for site in "AB":
        ph = phantom(site, 0, SMOKE)
        assert ph.label.dtype == np.uint8 and set(np.unique(ph.label)) == {0, 1}
        assert not np.any(ph.label.astype(bool) & ~ph.mask.astype(bool))
        np.testing.assert_array_equal(ph.label, ((ph.fraction >= 0.5) & (ph.mask > 0)).astype(np.uint8))
        label = ph.label > 0
        ring = ndimage.binary_dilation(label) & ~label & (ph.mask > 0)
        assert ph.image[label].mean() > 1.3 * ph.image[ring].mean()


@pytest.mark.parametrize("shape", [SMOKE, COURSE], ids=["smoke", "course"])
def test_vessels_are_brighter_than_tissue_by_the_sites_contrast(shape):
    """Mean label intensity / mean tissue intensity: about 2.4-2.9 at site A and 1.9-2.3 at site B
    (fresh blood is 4.0x / 3.4x white matter; saturation and partial volume lower the mean)."""
    ranges = {"A": (2.2, 3.2), "B": (1.7, 2.5)}
    ratios = {}
    for site in "AB":
        ph = phantom(site, 0, shape)
        ratio = ph.image[ph.label > 0].mean() / ph.image[_tissue(ph)].mean()
        lo, hi = ranges[site]
        assert lo <= ratio <= hi, (site, shape, ratio)
        assert ratio < PROTOCOLS[site].vessel_contrast
        ratios[site] = ratio
    assert ratios["A"] > ratios["B"] + 0.2


def test_signal_fades_with_transit_time_slower_flow_and_depth_into_the_slab():
    tree = phantom("A", 0, COURSE).tree
    for i, b in enumerate(tree.branches):
        assert np.all(np.diff(b.transit_s) >= 0) or b.joins is not None
        for c in b.children:
            assert tree.branches[c].transit_s[0] == pytest.approx(b.transit_s[-1])
    t = np.linspace(0, 3, 50)
    for site in "AB":
        s = blood_signal(site, t)
        assert s[0] == pytest.approx(PROTOCOLS[site].vessel_contrast)
        assert np.all(np.diff(s) < 0) and s[-1] > PROTOCOLS[site].saturated_blood
    seg = tree.segments()
    blood = blood_signal("A", seg["transit_s"])
    assert blood[seg["radius"] < 0.4].mean() < blood[seg["radius"] > 0.8].mean() - 0.3  # thin = slow = darker
    # In the image: vessel cores in the lowest third of the slab are brighter than in the top third.
    for site in "AB":
        ph = phantom(site, 0, COURSE)
        z = np.arange(ph.image.shape[2])[None, None, :]
        nz = ph.image.shape[2]
        core = ph.fraction >= 0.9
        assert ph.image[core & (z < nz // 3)].mean() > ph.image[core & (z >= 2 * nz // 3)].mean()


@pytest.mark.parametrize("shape", [SMOKE, COURSE], ids=["smoke", "course"])
def test_label_is_mostly_a_few_connected_components(shape):
    for site in "AB":
        ph = phantom(site, 0, shape)
        comp, n = ndimage.label(ph.label, structure=np.ones((3, 3, 3)))
        sizes = np.sort(np.bincount(comp.ravel())[1:])[::-1]
        share = sizes / sizes.sum()
        if shape == COURSE:
            assert share[0] >= 0.6, (site, share[:5])  # the circle of Willis joins the three root trees
        assert share[:3].sum() >= 0.55, (site, shape, share[:5])


def test_same_seed_gives_identical_volumes_and_another_seed_differs():
    for site in "AB":
        a = make_phantom(site, 3, SMOKE)
        b = make_phantom(site, 3, SMOKE)
        c = make_phantom(site, 4, SMOKE)
        for name in ("image", "label", "mask"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.image.dtype == np.float32 and a.mask.dtype == np.uint8
        assert not np.array_equal(a.label, c.label)
        assert not np.array_equal(a.image, c.image)


# ----------------------------------------------------------------------------- the vessel tree
def test_tree_obeys_murray_law_and_spans_thick_to_sub_voxel_vessels():
    tree = phantom("A", 0, COURSE).tree
    g = tree.murray_exponent
    assert 2.5 <= g <= 3.0
    bifurcations = tree.bifurcations()
    assert len(bifurcations) > 50
    for parent, children in bifurcations:
        assert len(children) == 2
        r_p = tree.branches[parent].radius
        assert sum(tree.branches[c].radius ** g for c in children) == pytest.approx(r_p**g, rel=1e-9)
        assert all(tree.branches[c].radius < r_p for c in children)
        # Children start where the parent ends.
        for c in children:
            np.testing.assert_allclose(tree.branches[c].points[0], tree.branches[parent].points[-1])
    radii = np.array([b.radius for b in tree.branches])
    assert radii.min() >= R_MIN_MM
    assert (radii < 0.5 * min(PROTOCOLS["A"].spacing)).sum() > 20  # sub-voxel branches
    assert radii.max() == pytest.approx(tree.root_radius_mm)
    assert len(tree.roots) == 3
    assert {tree.branches[i].name for i in tree.roots} == {"ICA_L", "ICA_R", "BA"}
    assert len(tree.communicating) == 3


def test_tree_is_tortuous_and_stays_in_the_brain():
    tree = phantom("A", 0, COURSE).tree
    ratios = []
    for b in tree.branches:
        if b.length_mm >= 5 and len(b.points) >= 5 and b.joins is None:
            chord = np.linalg.norm(b.points[-1] - b.points[0])
            ratios.append(b.length_mm / chord)
    assert len(ratios) > 30
    assert np.median(ratios) > 1.03  # not straight
    assert np.percentile(ratios, 90) > 1.15
    # Roots enter from below; everything else stays inside the field of view (up to the top face).
    fov = field_of_view_mm(COURSE)
    seg = tree.segments()
    assert all(tree.branches[i].points[0, 2] < -fov[2] / 2 for i in tree.roots)
    inner = np.concatenate([seg["start"], seg["end"]])
    assert np.all(np.abs(inner[:, :2]) <= fov[:2] / 2)


def test_root_radius_scales_with_the_brain_and_the_tree_is_deterministic():
    t1 = grow_vessel_tree(np.random.default_rng(7), SMOKE)
    t2 = grow_vessel_tree(np.random.default_rng(7), SMOKE)
    assert len(t1.branches) == len(t2.branches)
    for a, b in zip(t1.branches, t2.branches):
        np.testing.assert_array_equal(a.points, b.points)
    course = phantom("A", 0, COURSE).tree
    # 2.4 mm for a 150 mm brain, proportionally smaller for the course's 77 mm field of view.
    assert 2.4 * 76.8 / 150 * 0.9 <= course.root_radius_mm <= 2.4 * 76.8 / 150 * 1.1


# ----------------------------------------------------------------------------- partial volume
def test_rasterized_vessel_has_the_right_cross_section():
    """A straight vessel along z: the fractions of one slice add up to its cross-section area."""
    spacing = (0.6, 0.6, 0.9)
    shape = (40, 40, 20)
    affine = site_affine("A", shape)
    for r in (0.25, 0.6, 2.0):
        start, end = np.array([[0.13, -0.21, -30.0]]), np.array([[0.13, -0.21, 30.0]])
        frac, signal = rasterize_vessels(start, end, np.array([r]), np.array([3.0]), shape, affine)
        area = frac[:, :, 10].sum() * spacing[0] * spacing[1]
        assert area == pytest.approx(math.pi * r * r, rel=0.03)
        assert frac.max() <= 1.0 and np.allclose(signal[frac > 0.01], 3.0)
        labelled = (frac[:, :, 10] >= 0.5).sum() * spacing[0] * spacing[1]
        if r >= 2.0:
            assert labelled == pytest.approx(math.pi * r * r, rel=0.1)
        if r < labelled_radius_of("A"):
            assert labelled <= spacing[0] * spacing[1]  # a sub-voxel vessel: at most the voxel it crosses


def test_rasterized_oblique_vessel_keeps_its_volume():
    shape = (50, 50, 34)
    affine = site_affine("A", shape)
    r = 0.8
    a, b = np.array([-9.0, -7.0, -8.0]), np.array([8.0, 9.0, 7.0])
    frac, _ = rasterize_vessels(a[None], b[None], np.array([r]), np.array([1.0]), shape, affine)
    # Capsule volume: cylinder plus the two half-ball caps.
    volume = math.pi * r * r * np.linalg.norm(b - a) + 4 / 3 * math.pi * r**3
    assert frac.sum() * np.prod(PROTOCOLS["A"].spacing) == pytest.approx(volume, rel=0.03)


# ----------------------------------------------------------------------------- files and cache
def test_write_dataset_writes_readable_nifti_with_site_geometry(tmp_path):
    paths = write_phantom_dataset(tmp_path, site="B", n_subjects=2, seed=11, volume_shape=SMOKE)
    assert [p.name for p in paths] == ["B-000.nii.gz", "B-001.nii.gz"]
    shape_b = site_shape("B", SMOKE)
    for i, p in enumerate(paths):
        assert p == tmp_path / "images" / f"B-00{i}.nii.gz"
        image = load_volume(p, "image")
        label = load_volume(tmp_path / "labels" / p.name, "label")  # validates binary, non-empty
        mask = load_volume(tmp_path / "masks" / p.name, "mask")
        check_same_geometry(image, label)
        check_same_geometry(image, mask)
        assert image.shape == shape_b
        np.testing.assert_allclose(image.spacing, PROTOCOLS["B"].spacing, rtol=1e-6)
        np.testing.assert_allclose(image.affine, site_affine("B", shape_b), atol=1e-5)
        expected = make_phantom("B", subject_seed(11, "B", i), SMOKE)
        np.testing.assert_array_equal(label.data, expected.label)
        np.testing.assert_array_equal(mask.data, expected.mask)
        np.testing.assert_allclose(image.data, expected.image, rtol=1e-6)
    assert not list(tmp_path.rglob("*.partial*"))


def test_subject_seeds_are_distinct_and_independent_of_the_count(tmp_path):
    seeds = {subject_seed(5, site, i) for site in "AB" for i in range(20)}
    assert len(seeds) == 40
    assert subject_seed(5, "A", 3) == subject_seed(5, "A", 3) != subject_seed(6, "A", 3)
    one = write_phantom_dataset(tmp_path / "one", "A", 1, 5, SMOKE)
    two = write_phantom_dataset(tmp_path / "two", "A", 2, 5, SMOKE)
    np.testing.assert_array_equal(load_volume(one[0]).data, load_volume(two[0]).data)


def test_existing_subjects_are_skipped_and_missing_ones_rewritten(tmp_path):
    paths = write_phantom_dataset(tmp_path, "A", 2, 9, SMOKE)
    files = sorted(tmp_path.rglob("*.nii.gz"))
    assert len(files) == 6
    stamps = {f: f.stat().st_mtime_ns for f in files}
    before = load_volume(tmp_path / "labels" / "A-001.nii.gz", "label").data
    assert write_phantom_dataset(tmp_path, "A", 2, 9, SMOKE) == paths
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # nothing rewritten
    (tmp_path / "labels" / "A-001.nii.gz").unlink()
    write_phantom_dataset(tmp_path, "A", 2, 9, SMOKE)
    for f in files:
        if f.name.startswith("A-000"):
            assert f.stat().st_mtime_ns == stamps[f]
    np.testing.assert_array_equal(load_volume(tmp_path / "labels" / "A-001.nii.gz", "label").data, before)


def test_cli_phantom_writes_a_site(tmp_path):
    from tofmra_utils.cli import main

    code = main(["phantom", "--site", "B", "--subjects", "1", "--seed", "2", "--out", str(tmp_path),
                 "--shape", *map(str, SMOKE)])
    assert code == 0
    assert load_volume(tmp_path / "images" / "B-000.nii.gz").shape == site_shape("B", SMOKE)


def test_bad_arguments_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown phantom site 'C'"):
        make_phantom("C", 0, SMOKE)
    with pytest.raises(ValueError, match="volume_shape"):
        make_phantom("A", 0, (64, 64))
    with pytest.raises(ValueError, match="n_subjects"):
        write_phantom_dataset(tmp_path, "A", 0, 0, SMOKE)
    assert not any(tmp_path.iterdir())
