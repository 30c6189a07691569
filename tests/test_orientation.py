"""Any orientation and dtype in, one canonical axial orientation for the patches, the input's geometry out."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from tofmra_utils.data import prepare_dataset
from tofmra_utils.data.orientation import axis_codes, from_canonical, to_canonical
from tofmra_utils.io import save_volume
from tofmra_utils.patchset import PatchSet
from tofmra_utils.profiles import UnetConfig
from tofmra_utils.unet.infer import predict_volume, segment_file
from tofmra_utils.unet.train import load_unet, train_unet

from builders import data_profile, tube_volumes


def rotation(degrees: float) -> np.ndarray:
    """Rotation about the world's z then x axis: an oblique slab."""
    t = np.deg2rad(degrees)
    rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(t / 2), -np.sin(t / 2)], [0, np.sin(t / 2), np.cos(t / 2)]])
    return rx @ rz


def lps_oblique(data: np.ndarray, ras_affine: np.ndarray, degrees: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored in LPS order (x and y flipped) with an oblique affine; returns data, affine."""
    stored = data[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    affine = ras_affine @ flip  # voxel (i, j, k) of `stored` is voxel (X-1-i, Y-1-j, k) of `data`
    turn = np.eye(4)
    turn[:3, :3] = rotation(degrees)
    return np.ascontiguousarray(stored), turn @ affine


def world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (affine @ np.append(ijk, 1.0))[:3]


def test_to_canonical_keeps_every_voxel_at_its_world_position():
    image, _, _, ras = tube_volumes(0, spacing=(0.5, 0.6, 1.0))
    stored, affine = lps_oblique(image, ras)
    assert axis_codes(affine) == "LPS"
    canon, canon_affine, how = to_canonical(stored, affine)
    assert axis_codes(canon_affine) == "RAS" and not how.is_identity
    np.testing.assert_array_equal(canon, image)
    rng = np.random.default_rng(0)
    for _ in range(5):
        ijk = np.array([rng.integers(0, s) for s in stored.shape])
        i2 = np.array([stored.shape[0] - 1 - ijk[0], stored.shape[1] - 1 - ijk[1], ijk[2]])
        assert canon[tuple(i2)] == stored[tuple(ijk)]
        np.testing.assert_allclose(world(canon_affine, i2), world(affine, ijk), atol=1e-9)
    np.testing.assert_array_equal(from_canonical(canon, how), stored)


def test_a_ras_volume_is_left_alone():
    image, _, _, ras = tube_volumes(0)
    canon, affine, how = to_canonical(image, ras)
    assert how.is_identity and canon is image
    np.testing.assert_array_equal(affine, ras)


def test_sagittal_storage_is_brought_to_axial_slices():
    image, _, _, ras = tube_volumes(1)
    stored = np.ascontiguousarray(np.transpose(image, (2, 0, 1)))  # slices along the first axis
    perm = np.zeros((4, 4))
    perm[0, 1] = perm[1, 2] = perm[2, 0] = perm[3, 3] = 1  # stored (k, i, j) -> (i, j, k)
    canon, canon_affine, _ = to_canonical(stored, ras @ perm)
    np.testing.assert_array_equal(canon, image)
    np.testing.assert_allclose(canon_affine, ras)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_prepare_gives_the_same_patches_for_any_orientation_and_dtype(tmp_path, dtype):
    """Four subjects stored RAS and the same four stored LPS-oblique (and in another dtype) give identical patches."""
    profile = data_profile(n_val=1, n_test=1, patches_per_subject=12)
    for layout in ("ras", "lps"):
        for i in range(4):
            image, label, mask, ras = tube_volumes(i)
            image = np.clip(image, 0, 255).astype(dtype) if dtype == np.uint8 else image.astype(dtype)
            for folder, data in (("images", image), ("labels", label), ("masks", mask)):
                stored, affine = (data, ras) if layout == "ras" else lps_oblique(data, ras)
                save_volume(tmp_path / layout / folder / f"sub-{i}.nii.gz", stored, affine)
    a = prepare_dataset(tmp_path / "ras" / "images", None, tmp_path / "a", profile, masks_dir=tmp_path / "ras" / "masks")
    b = prepare_dataset(tmp_path / "lps" / "images", None, tmp_path / "b", profile, masks_dir=tmp_path / "lps" / "masks")
    for split in ("train", "val"):
        pa, pb = a.patches(split), b.patches(split)
        np.testing.assert_array_equal(pa.image, pb.image)
        np.testing.assert_array_equal(pa.label, pb.label)
        np.testing.assert_array_equal(pa.centre, pb.centre)
    assert all(si["orientation"] == "LPS -> RAS" for si in b.info["subject_info"].values())
    assert all("orientation" not in si for si in a.info["subject_info"].values())
    if dtype == np.uint8:
        assert all(any("8-bit" in w for w in si["warnings"]) for si in b.info["subject_info"].values())


def test_computed_mask_is_written_in_the_inputs_geometry(tmp_path):
    profile = data_profile(n_val=1, n_test=1, patches_per_subject=6)
    for i in range(3):
        image, label, _, ras = tube_volumes(i)
        for folder, data in (("images", image), ("labels", label)):
            stored, affine = lps_oblique(data, ras)
            save_volume(tmp_path / "in" / folder / f"sub-{i}.nii.gz", stored, affine)
    ds = prepare_dataset(tmp_path / "in" / "images", None, tmp_path / "site", profile, brain_mask="threshold")
    for s in ds.subjects.values():
        mask, img = nib.load(str(s.mask)), nib.load(str(s.image))
        assert mask.shape == img.shape
        np.testing.assert_allclose(mask.affine, img.affine, atol=1e-6)
    # ...so the stored site loads again, and the loaded volumes are canonical.
    image, label, mask = ds.load_subject(next(iter(ds.subjects)))
    assert axis_codes(image.affine) == "RAS" and image.shape == mask.shape == label.shape


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, p = 32, 16
    label = np.zeros((n, p, p), np.uint8)
    for i in range(n):
        label[i, :, rng.integers(2, p - 2) + np.arange(-1, 1)] = 1
    image = rng.normal(0, 0.3, label.shape) + 2.0 * label
    image = 2 * (image - image.min(axis=(1, 2), keepdims=True)) / np.ptp(image, axis=(1, 2), keepdims=True) - 1
    train = PatchSet(image=image, label=label, subject=np.full(n, "s"), kind=np.zeros(n), centre=np.zeros((n, 3)))
    cfg = UnetConfig(base_width=2, depth=2, dropout=0.0, batch_size=16, epochs=1, lr=1e-2)
    with torch.random.fork_rng():
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        result = train_unet(train, None, cfg, tmp_path_factory.mktemp("unet"), seed=0, max_steps=4, progress=False)
        torch.set_num_threads(before)
    return result.checkpoint


def test_segment_an_oblique_lps_volume_writes_back_in_its_geometry(tiny_unet, tmp_path):
    image, _, mask, ras = tube_volumes(2, shape=(36, 32, 4))
    stored, affine = lps_oblique(image.astype(np.int16), ras)
    stored_mask, _ = lps_oblique(mask, ras)
    img = nib.Nifti1Image(stored, affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"oblique lps"
    nib.save(img, str(tmp_path / "img.nii.gz"))
    save_volume(tmp_path / "mask.nii.gz", stored_mask, affine)
    out = segment_file(tiny_unet, tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz", mask_path=tmp_path / "mask.nii.gz",
                       reorient=True)
    seg = nib.load(str(out))
    assert seg.shape == stored.shape
    np.testing.assert_allclose(seg.affine, affine, atol=1e-6)
    assert seg.header["descrip"].tobytes().startswith(b"oblique lps")
    # The prediction was made on the canonical (RAS) array and mapped back voxel for voxel.
    model, info = load_unet(tiny_unet, device="cpu")
    canon_prob = predict_volume(model, info, image.astype(np.float32), mask, 16)
    expected = (canon_prob >= 0.5).astype(np.uint8)[::-1, ::-1, :]
    np.testing.assert_array_equal(np.asarray(seg.dataobj), expected)
