"""Builders the tests share: small profiles and synthetic data that make each test fast.

Imported as ``from builders import ...`` (pytest puts ``tests/`` on the path), so no test module
imports another.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tofmra_utils.io import save_volume
from tofmra_utils.patchset import PatchSet
from tofmra_utils.profiles import get_profile

SUBJECTS = ("sub-q7x", "sub-k2m", "sub-zz9")


# ----------------------------------------------------------------------------- data preparation
SHAPE = (40, 40, 8)


def data_profile(name: str = "smoke", **data):
    """The smoke profile with tiny patch sizes (patch 8 px, 20 per subject, 2 val, 2 test)."""
    base = get_profile(name)
    defaults = dict(patch_size=8, patches_per_subject=20, n_val=2, n_test=2, site_a_subjects=7,
                    site_b_subjects=5, site_b_n_test=2, volume_shape=SHAPE)
    defaults.update(data)
    return dataclasses.replace(base, data=dataclasses.replace(base.data, **defaults))


def tube_volumes(seed: int, shape=SHAPE, spacing=(0.5, 0.5, 1.0)):
    """A brain-like box with two bright tubes along z and y; returns image, label, mask, affine."""
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]]
    mask = ((x >= 4) & (x < shape[0] - 4) & (y >= 4) & (y < shape[1] - 4)).astype(np.uint8)
    cx, cy = 12 + seed % 5, 20
    label = (((x - cx) ** 2 + (y - cy) ** 2) <= 4) | ((np.abs(x - 28) <= 1) & (np.abs(z - shape[2] // 2) <= 1) & (y >= 6) & (y < 34))
    label = label.astype(np.uint8)
    image = mask * (100.0 + 10 * rng.standard_normal(shape)) + label * 300.0 + 5.0 * rng.random(shape)
    affine = np.diag([*spacing, 1.0])
    return image.astype(np.float32), label, mask, affine


def write_tube_subjects(root: Path, n: int, with_masks: bool = True, spacing=(0.5, 0.5, 1.0), shape=SHAPE) -> Path:
    """Write n subjects to root/images|labels|masks/sub-XX.nii.gz; returns root."""
    for i in range(n):
        image, label, mask, affine = tube_volumes(i, shape=shape, spacing=spacing)
        sid = f"sub-{i:02d}"
        save_volume(root / "images" / f"{sid}.nii.gz", image, affine)
        save_volume(root / "labels" / f"{sid}.nii.gz", label, affine)
        if with_masks:
            save_volume(root / "masks" / f"{sid}.nii.gz", mask, affine)
    return root


# ----------------------------------------------------------------------------- GANs
def gan_profile(steps: int = 6, checkpoint_every: int = 2, sample_every: int = 100):
    """16 px patches, two doubling layers, batch 8: a GAN step in milliseconds."""
    smoke = get_profile("smoke")
    n = 48
    variants = {
        name: dataclasses.replace(s, batch_size=8, epochs=steps * 8 / n) for name, s in smoke.gan.variants.items()
    }
    return dataclasses.replace(
        smoke,
        data=dataclasses.replace(smoke.data, patch_size=16),
        gan=dataclasses.replace(
            smoke.gan, generator_channels=(8, 4), variants=variants, n_synthetic=20,
            checkpoint_every=checkpoint_every, sample_every=sample_every,
        ),
    )


def gan_patches(n: int = 48, size: int = 16, seed: int = 0) -> PatchSet:
    """Bright bars on a dark background, the label on the bar."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, -0.5, (n, size, size)).astype(np.float32)
    label = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        r = rng.integers(2, size - 2)
        label[i, r - 1 : r + 1] = 1
        image[i, r - 1 : r + 1] = rng.uniform(0.6, 1.0)
    subject = np.array([SUBJECTS[i % len(SUBJECTS)] for i in range(n)])
    return PatchSet(image, label, subject, np.ones(n), np.zeros((n, 3)), meta={"subjects": list(SUBJECTS)})


# ----------------------------------------------------------------------------- evaluation
class VolumesDataset:
    """The two methods of SiteDataset that whole-volume evaluation uses, over in-memory volumes.

    ``volumes``: subject id -> (image, label, mask) arrays; every subject belongs to ``split``.
    """

    def __init__(self, volumes: dict, split: str = "test", spacing=(0.5, 0.5, 0.8)) -> None:
        self.root = None
        self.volumes, self.split = volumes, split
        self.affine = np.diag([*spacing, 1.0])

    def subjects_in(self, split):
        from types import SimpleNamespace

        return [SimpleNamespace(id=s) for s in self.volumes] if split == self.split else []

    def load_subject(self, subject_id):
        from tofmra_utils.io import Volume

        image, label, mask = self.volumes[subject_id]
        return Volume(image, self.affine), Volume(label, self.affine), Volume(mask, self.affine)
