"""tofmra_utils: the code behind the tofmra notebooks.

Reproduces Kossen et al. 2021 (Computers in Biology and Medicine 131:104254): GANs that
synthesize anonymized, labeled TOF-MRA patches, U-nets trained on them, and transfer learning.
Modules, one idea each: ``profiles`` (all sizes), ``study`` (the paper's numbers),
``conventions`` (label channel, scaling, z-score, Dice, file hash), ``resumable`` (fingerprinted
units of work), ``batches``, ``io`` (validated NIfTI, atomic writes), ``phantom`` (synthetic
TOF-MRA volumes), ``data`` (data preparation), ``patchset`` (the patch file format), ``gan``
(models, losses, the GAN step, training, generation), ``unet`` (model, the U-net step, training,
inference), ``metrics`` (DSC, 95HD), ``transfer`` (site-B sweep), ``pipeline``, ``cli`` and
``report`` (the ``tofmra`` command), ``plots`` and ``widgets`` (figures the notebooks share).
"""

from typing import Any

from .profiles import GAN_NAMES, PROFILES, Profile, get_profile

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The notebook context imports torch (seconds); commands that never train (`tofmra evaluate`,
    # `report`, `--help`) import this package too and should not pay for it.
    if name in ("NotebookContext", "setup_notebook"):
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'tofmra_utils' has no attribute {name!r}")

__all__ = ["GAN_NAMES", "PROFILES", "Profile", "get_profile", "NotebookContext", "setup_notebook", "__version__"]
