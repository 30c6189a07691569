"""The study's own numbers (Kossen et al. 2021, journal version), written once.

These are *study constants*: quoted from the paper, never measured here. Everything this
repository reports beside them is computed from a run. 95HD values are in the units of the
EvaluateSegmentation tool the study used (voxels; see :mod:`tofmra_utils.metrics`).
"""

from __future__ import annotations

__all__ = ["STUDY_RESULTS", "STUDY_TL_ONE_PATIENT", "STUDY_GAN_ORDER"]

#: Test-set means of the U-nets by training set (DSC, 95HD in tool units). The journal's headline
#: table gives no DCGAN / WGAN-GP U-net numbers.
STUDY_RESULTS: dict[str, dict[str, float]] = {
    "real": {"dsc": 0.89, "hd95": 26.57},
    "wgan_gp_sn": {"dsc": 0.85, "hd95": 30.00},
}

#: Transfer learning with one site-B patient: (DSC, 95HD in tool units) per initialization.
STUDY_TL_ONE_PATIENT: dict[str, tuple[float, float]] = {"synthetic": (0.91, 24.66), "scratch": (0.84, 27.36)}

#: The study's GAN ranking, best first.
STUDY_GAN_ORDER: tuple[str, ...] = ("wgan_gp_sn", "wgan_gp", "dcgan")
