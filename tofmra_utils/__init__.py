"""tofmra_utils: the code behind the tofmra notebooks.

Reproduces Kossen et al. 2021 (Computers in Biology and Medicine 131:104254): GANs that
synthesize anonymized, labeled TOF-MRA patches, U-nets trained on them, and transfer learning.
Modules, one idea each: ``profiles`` (all sizes), ``io`` (validated NIfTI, atomic writes),
``phantom`` (synthetic TOF-MRA volumes), ``patches`` (data preparation), ``patchset`` (the patch
file format), ``gan`` (models, losses, training, generation), ``unet`` (model, training,
inference), ``metrics`` (DSC, 95HD), ``transfer`` (site-B sweep), ``pipeline`` and ``cli``
(the ``tofmra`` command), ``plots`` and ``widgets`` (figures the notebooks share).
"""

from .notebook import NotebookContext, setup_notebook
from .profiles import GAN_NAMES, PROFILES, Profile, get_profile

__version__ = "0.1.0"

__all__ = ["GAN_NAMES", "PROFILES", "Profile", "get_profile", "NotebookContext", "setup_notebook", "__version__"]
