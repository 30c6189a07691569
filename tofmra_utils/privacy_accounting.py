"""Privacy accounting of DP-SGD, by Google's ``dp-accounting`` library (never by hand).

A private critic step (:mod:`tofmra_utils.gan.dp`) is one *Poisson-sampled Gaussian mechanism*:
every privacy unit (a patient, or a patch) enters the step with probability ``q``, its gradient
contribution is clipped to L2 norm ``C``, and Gaussian noise of standard deviation
``noise_multiplier * C`` is added to the sum. ``T`` such steps compose. This module only
describes that to the library and reads its answers:

:func:`epsilon`
    ``T`` x ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` in the RDP accountant
    (``dp_accounting.rdp.RdpAccountant``), converted to ``(epsilon, delta)``.
:func:`noise_multiplier_for`
    The smallest noise multiplier that meets a target epsilon (the library's
    ``mechanism_calibration.calibrate_dp_mechanism``, a bracketed root search over the same
    accountant).
:func:`group_epsilon`
    What a training that clipped and sampled *patches* guarantees to a *patient* owning ``k``
    of them: per step, the patient's patches enter independently with rate ``q`` each, so the
    shift of the noisy sum is ``m * C`` with ``m ~ Binomial(k, q)``. That is the library's
    ``MixtureOfGaussiansDpEvent`` (sensitivities ``0..k`` in units of ``C``, probabilities the
    binomial ones; Ganesh 2024, arXiv 2310.15526), accounted with the PLD accountant, the only
    one of the library that supports it. It is the patient-level epsilon of the 2022 study's
    per-patch accounting.

Neighbouring data sets differ by adding or removing one unit (``ADD_OR_REMOVE_ONE``, the
library's default). Epsilons are natural-log based; ``delta`` is the usual additive slack.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import dp_accounting
import numpy as np
from dp_accounting import dp_event, mechanism_calibration
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats

__all__ = [
    "UNITS",
    "DpGuarantee",
    "epsilon",
    "epsilon_and_order",
    "noise_multiplier_for",
    "group_epsilon",
]

#: Privacy units a guarantee can refer to.
UNITS: tuple[str, ...] = ("patient", "patch")

# The RDP accountant logs a warning for every fractional order whose series does not converge at a small
# noise multiplier; it then leaves that order out, which only loosens the bound. Dozens of such lines per
# noise search would bury a notebook's output, so only errors are shown.
logging.getLogger("absl").setLevel(logging.ERROR)

#: Upper end of the noise-multiplier search (a target epsilon that needs more is refused).
_MAX_NOISE_MULTIPLIER = 1e4


@dataclass(frozen=True)
class DpGuarantee:
    """An ``(epsilon, delta)`` guarantee and what it refers to.

    Attributes
    ----------
    epsilon
        ``inf`` for a non-private run.
    delta
        Additive slack.
    unit
        ``"patient"`` or ``"patch"``: who the guarantee protects.
    accountant
        Which accountant of ``dp-accounting`` gave it (``"rdp"`` or ``"pld"``).
    """

    epsilon: float
    delta: float
    unit: str
    accountant: str

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def _check(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> None:
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be non-negative, got {noise_multiplier}")
    if not 0.0 <= sampling_rate <= 1.0:
        raise ValueError(f"sampling_rate must lie in [0, 1], got {sampling_rate}")
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta}")


def _event(noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))


def epsilon_and_order(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, orders: Sequence[float] | None = None,
) -> tuple[float, float]:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps (RDP accountant) and the optimal RDP order.

    Parameters
    ----------
    noise_multiplier
        Noise standard deviation divided by the clipping norm (0: no noise, epsilon ``inf``).
    sampling_rate
        Probability ``q`` that a unit enters a step.
    steps
        Number of noisy steps that touch the data.
    delta
        Target delta.
    orders
        RDP orders (default: the library's).

    Returns
    -------
    (epsilon, order); ``(0, nan)`` when nothing touched the data, ``(inf, nan)`` without noise.
    """
    _check(noise_multiplier, sampling_rate, steps, delta)
    if steps == 0 or sampling_rate == 0.0:
        return 0.0, math.nan
    if noise_multiplier == 0.0:
        return math.inf, math.nan
    accountant = rdp_privacy_accountant.RdpAccountant(orders) if orders is not None else rdp_privacy_accountant.RdpAccountant()
    accountant.compose(_event(noise_multiplier, sampling_rate), int(steps))
    eps, order = accountant.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


def epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
            orders: Sequence[float] | None = None) -> float:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps, by the RDP accountant (:func:`epsilon_and_order`)."""
    return epsilon_and_order(noise_multiplier, sampling_rate, steps, delta, orders)[0]


def noise_multiplier_for(target_epsilon: float, sampling_rate: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier whose :func:`epsilon` does not exceed ``target_epsilon``.

    ``target_epsilon = inf`` gives 0 (no noise). Uses ``dp_accounting``'s
    ``calibrate_dp_mechanism`` over fresh RDP accountants.

    Raises
    ------
    ValueError
        For a non-positive target, or one that needs a noise multiplier above 1e4.
    """
    _check(0.0, sampling_rate, steps, delta)
    if math.isinf(target_epsilon):
        return 0.0
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be positive (or inf), got {target_epsilon}")
    if steps == 0 or sampling_rate == 0.0:
        return 0.0
    if epsilon(_MAX_NOISE_MULTIPLIER, sampling_rate, steps, delta) > target_epsilon:
        raise ValueError(f"epsilon {target_epsilon} is out of reach with q={sampling_rate}, {steps} steps, "
                         f"delta={delta} (needs a noise multiplier above {_MAX_NOISE_MULTIPLIER:g})")
    sigma = mechanism_calibration.calibrate_dp_mechanism(
        rdp_privacy_accountant.RdpAccountant,
        lambda s: dp_accounting.SelfComposedDpEvent(_event(s, sampling_rate), int(steps)),
        target_epsilon, delta,
        bracket_interval=mechanism_calibration.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-4,
    )
    return float(sigma)


def group_epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, group_size: int,
    value_discretization_interval: float | None = None, max_tail: float = 1e-9,
) -> float:
    """Epsilon for a group of ``group_size`` units that are sampled and clipped one by one.

    The patient-level epsilon of patch-level DP-SGD: each of the patient's ``k`` patches enters
    a step with probability ``q``, each clipped to ``C``, so the patient moves the noisy sum by
    ``m * C``, ``m ~ Binomial(k, q)``: ``dp_accounting``'s ``MixtureOfGaussiansDpEvent`` with
    standard deviation ``noise_multiplier`` and sensitivities ``m`` (units of ``C``), composed
    ``steps`` times in the PLD accountant.

    Parameters
    ----------
    group_size
        Units per group (patches per patient), ``k >= 1``; 1 gives the per-unit epsilon (PLD).
    value_discretization_interval
        The PLD grid (coarser is faster; the pessimistic PLD stays an upper bound). Default:
        a first pass on a grid of 10, then, unless that grid is already within 1 % of the
        result, a grid of a thousandth of it (at least 1e-3): a group of hundreds of patches, whose
        epsilon runs into the thousands, then costs seconds instead of minutes.
    max_tail
        Binomial outcomes beyond the ``1 - max_tail`` quantile are merged into one of shift ``k``
        (rounded *up*, so the bound stays valid) to keep the mixture small.
    """
    _check(noise_multiplier, sampling_rate, steps, delta)
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    if steps == 0 or sampling_rate == 0.0:
        return 0.0
    if noise_multiplier == 0.0:
        return math.inf
    k = int(group_size)
    binomial = stats.binom(k, sampling_rate)
    top = int(min(k, binomial.isf(max_tail) + 1))
    shifts = np.arange(top + 1, dtype=float)
    probs = binomial.pmf(shifts)
    if top < k:  # the far tail moves to the largest possible shift k: the bound can only grow
        shifts, probs = np.append(shifts, float(k)), np.append(probs, binomial.sf(top))
    keep = probs > 0
    event = dp_event.MixtureOfGaussiansDpEvent(
        float(noise_multiplier), [float(s) for s in shifts[keep]], [float(p) for p in probs[keep] / probs[keep].sum()])

    def on_grid(interval: float) -> float:
        accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
        accountant.compose(event, int(steps))
        # The library's epsilon search divides by tail masses that underflow for large groups; the overflow
        # it warns about only makes a comparison true that is then skipped, so the warning is noise.
        with np.errstate(over="ignore", divide="ignore"):
            return float(accountant.get_epsilon(delta))

    if value_discretization_interval is not None:
        return on_grid(float(value_discretization_interval))
    coarse_interval = 10.0
    coarse = on_grid(coarse_interval)
    fine = max(1e-3, coarse / 1000.0)
    return coarse if coarse_interval <= 0.01 * coarse else min(coarse, on_grid(fine))
