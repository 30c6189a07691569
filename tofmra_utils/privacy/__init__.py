"""Privacy audit of synthetic patch sets: memorization, membership inference, fidelity.

Notebook 07 and ``tofmra audit`` run it; ``tofmra export`` refuses a set whose audit flags
copies. See :mod:`.audit` for the one entry point, :func:`audit_synthetic`.
"""

from .audit import AUDIT_KEYS, AuditResult, audit_synthetic, check_audit_inputs
from .features import FEATURE_SPACES, FLIPS, embed, embed_flips
from .fidelity import Fidelity, fidelity, frechet_distance, kernel_distance, prdc
from .membership import AttackResult, auc, critic_scores, load_critic
from .memorization import CALIBRATION_PERCENTILE, Memorization, memorization

__all__ = [
    "AUDIT_KEYS",
    "AuditResult",
    "audit_synthetic",
    "check_audit_inputs",
    "FEATURE_SPACES",
    "FLIPS",
    "embed",
    "embed_flips",
    "Fidelity",
    "fidelity",
    "frechet_distance",
    "kernel_distance",
    "prdc",
    "AttackResult",
    "auc",
    "critic_scores",
    "load_critic",
    "CALIBRATION_PERCENTILE",
    "Memorization",
    "memorization",
]
