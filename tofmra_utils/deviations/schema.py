"""What a deviation is: the study's settings, one row of the table, the rule that builds it, formatting."""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..profiles import GAN_NAMES, Profile


#: Parts of the pipeline, in the order the table shows them.
AREAS: tuple[str, ...] = ("data", "GAN", "U-net", "evaluation", "transfer")

#: Columns of :func:`deviations_table` (and, capitalized, of :func:`deviations_markdown`).
TABLE_COLUMNS: tuple[str, ...] = ("area", "topic", "study", "here", "profiles", "reason", "switch")

#: Notebook 05, whose parameter cell decides the inference mode of the main results table.
_NOTEBOOK_05 = Path(__file__).resolve().parents[2] / "notebooks" / "05_unet_synthetic_vs_real.ipynb"


# ============================================================================ the study's values
@dataclass(frozen=True)
class StudySetting:
    """One profile setting and the study's value of it.

    Attributes
    ----------
    path
        Dotted path into a :class:`~tofmra_utils.profiles.Profile`, e.g. ``"unet.lr"`` or
        ``"gan.variants.wgan_gp.lr"`` (a dictionary key is one step of the path).
    study
        The study's value (``REFERENCE.md``).
    alternatives
        Further values that also match the study (the study ran a full and a half U-net).
    derive
        Applied to the profile's value before comparing (e.g. the sweep's ``n`` without ``n = 0``,
        which has a row of its own).
    """

    path: str
    study: Any
    alternatives: tuple[Any, ...] = ()
    derive: Callable[[Any], Any] | None = None

    def value(self, profile: Profile) -> Any:
        """The profile's value at :attr:`path` (after :attr:`derive`)."""
        value: Any = profile
        for step in self.path.split("."):
            value = value[step] if isinstance(value, Mapping) else getattr(value, step)
        return self.derive(value) if self.derive is not None else value

    def differs(self, profile: Profile) -> bool:
        """Whether ``profile`` departs from the study here."""
        mine = self.value(profile)
        return not any(_same(mine, theirs) for theirs in (self.study, *self.alternatives))


def _same(a: Any, b: Any) -> bool:
    """Equality that forgives float rounding and compares tuples element by element."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def _positive(ns: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(n) for n in ns if int(n) > 0)


def _gan_settings(name: str, z_dim: int, lr: float, betas: tuple[float, float], batch_size: int, epochs: int,
                  n_critic: int, gp_weight: float) -> tuple[StudySetting, ...]:
    values = {"z_dim": z_dim, "lr": lr, "betas": betas, "batch_size": batch_size, "epochs": epochs,
              "n_critic": n_critic, "gp_weight": gp_weight, "min_steps": 0}
    return tuple(StudySetting(f"gan.variants.{name}.{field}", value) for field, value in values.items())


_WGAN = {"z_dim": 128, "lr": 1e-4, "betas": (0.0, 0.9), "batch_size": 300, "epochs": 200, "n_critic": 5,
         "gp_weight": 10.0}

#: The study's values of every profile setting the study specifies (``REFERENCE.md``).
#: Settings the study does not report (U-net batch size, dropout rate, site-B sizes, fine-tuning
#: learning rate, seeds) have no entry: no value of ours can contradict them.
STUDY_SETTINGS: tuple[StudySetting, ...] = (
    StudySetting("data.site_a_subjects", 66),
    StudySetting("data.n_val", 11),
    StudySetting("data.n_test", 14),
    StudySetting("data.patch_size", 96),
    StudySetting("data.patches_per_subject", 1000),
    StudySetting("data.vessel_patch_fraction", 0.5),
    StudySetting("gan.generator_channels", (1536, 768, 384, 192, 96)),
    StudySetting("gan.n_synthetic", 41000),
    StudySetting("gan.label_threshold", 0.8),
    StudySetting("gan.init_std", 0.05),
    StudySetting("gan.upsampling", "transposed5"),
    StudySetting("gan.critic_kernel", 5),
    StudySetting("gan.image_scaling", "per_patch"),
    StudySetting("gan.ema_decay", None),
    StudySetting("gan.diffaug", ()),
    StudySetting("gan.snapshots", 1),
    StudySetting("gan.label_threshold_rule", "fixed"),
    StudySetting("gan.label_fraction_scales", (1.0,)),
    StudySetting("gan.dcgan_targets", "noisy_two_sided"),
    StudySetting("gan.dcgan_generator_loss", "fm_l1"),
    StudySetting("gan.norm_init", "study"),
    StudySetting("gan.sn_last_layer", False),
    StudySetting("gan.generate_mode", "train"),
    *_gan_settings("dcgan", 100, 3e-4, (0.5, 0.999), 250, 300, 1, 0.0),
    *_gan_settings("wgan_gp", **_WGAN),
    *_gan_settings("wgan_gp_sn", **_WGAN),
    StudySetting("unet.base_width", 64, alternatives=(32,)),
    StudySetting("unet.depth", 4),
    StudySetting("unet.lr", 1e-4),
    StudySetting("unet.epochs", 10),
    StudySetting("unet.max_steps", None),
    StudySetting("unet.weight_init", "glorot"),
    StudySetting("unet.max_grad_norm", None),
    StudySetting("unet.loss", "dice"),
    StudySetting("unet.augment", True),
    StudySetting("unet.dropout_placement", "every_block"),
    StudySetting("transfer.n_subjects", tuple(range(1, 16)), derive=_positive),
    StudySetting("transfer.pretrained_gan", "wgan_gp_sn"),
    StudySetting("transfer.eval_mode", "tiles"),
    # The DP GAN follows the 2022 follow-up study (Kossen et al., Front AI 5:813842; REFERENCE.md).
    StudySetting("dp.unit", "patch"),
    StudySetting("dp.delta", 1.0 / 41000),
    StudySetting("dp.target_epsilons", (float("inf"), 7.4)),
)

_BY_PATH: dict[str, StudySetting] = {s.path: s for s in STUDY_SETTINGS}


def study_setting(path: str) -> StudySetting:
    """The :class:`StudySetting` at ``path`` (``KeyError`` naming the path if there is none)."""
    try:
        return _BY_PATH[path]
    except KeyError:
        raise KeyError(f"no study value recorded for {path!r}") from None


def study_mismatches(profile: Profile) -> tuple[str, ...]:
    """Paths of :data:`STUDY_SETTINGS` where ``profile`` differs from the study."""
    return tuple(s.path for s in STUDY_SETTINGS if s.differs(profile))


# ============================================================================ the registry
@dataclass(frozen=True)
class Deviation:
    """One row of the table: one way our runs differ from the study.

    Attributes
    ----------
    area
        Part of the pipeline, one of :data:`AREAS`.
    topic
        What differs, in a few words.
    study
        What the study did (``REFERENCE.md``: the paper and its public code).
    here
        What this repository does, with the values of the profiles it applies to.
    profiles
        Names of the profiles (``smoke``, ``course``, ``paper``) it applies to.
    reason
        Why; measured where the code records a measurement, and saying so where it records none.
    switch
        The profile field, parameter or command that restores the study's way, if any.
    fields
        Profile settings (:attr:`StudySetting.path`) this row accounts for.
    """

    area: str
    topic: str
    study: str
    here: str
    profiles: tuple[str, ...]
    reason: str
    switch: str | None = None
    fields: tuple[str, ...] = ()

    def row(self) -> dict[str, str]:
        """The row as strings, keyed by :data:`TABLE_COLUMNS`."""
        return {"area": self.area, "topic": self.topic, "study": self.study, "here": self.here,
                "profiles": ", ".join(self.profiles), "reason": self.reason, "switch": self.switch or ""}


Profiles = Mapping[str, Profile]


@dataclass(frozen=True)
class _Rule:
    """How to make a :class:`Deviation` from the profiles: the registry's entries.

    ``applies`` decides per profile whether the row concerns it; without it, a row with
    ``fields`` applies where any of those settings differs from the study, and a row without
    ``fields`` applies to every profile. ``here`` is text, or a function of the profiles the row
    applies to that writes their values into the text.
    """

    area: str
    topic: str
    study: str
    here: str | Callable[[Profiles], str]
    reason: str
    switch: str | None = None
    fields: tuple[str, ...] = ()
    applies: Callable[[Profile], bool] | None = None

    def concerns(self, profile: Profile) -> bool:
        if self.applies is not None:
            return self.applies(profile)
        if self.fields:
            return any(_BY_PATH[f].differs(profile) for f in self.fields)
        return True

    def build(self, profiles: Profiles) -> Deviation | None:
        """The row for ``profiles``, or ``None`` when it concerns none of them."""
        applicable = {name: p for name, p in profiles.items() if self.concerns(p)}
        if not applicable:
            return None
        here = self.here(applicable) if callable(self.here) else self.here
        switch = self.switch
        if switch is None and self.fields:
            switch = ", ".join(f"`{f}`" for f in self.fields)
        return Deviation(self.area, self.topic, self.study, here, tuple(applicable), self.reason, switch, self.fields)


# ---------------------------------------------------------------------------- text helpers
def _fmt(value: Any) -> str:
    """A setting as the table writes it: 5e-4 -> ``0.0005``, tuples comma-separated, None -> ``none``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}" if value >= 10000 else str(value)
    if isinstance(value, (tuple, list)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _per_profile(profiles: Profiles, describe: Callable[[Profile], str]) -> str:
    """``describe(p)`` for each profile, profiles with the same text grouped: ``"a (smoke); b (course)"``.

    A single text shared by all the given profiles is returned alone (the profiles column names them).
    """
    groups: dict[str, list[str]] = {}
    for name, profile in profiles.items():
        groups.setdefault(describe(profile), []).append(name)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{text} ({', '.join(names)})" for text, names in groups.items())


def _setting(path: str) -> Callable[[Profiles], str]:
    """``here`` that lists a single setting's value per profile."""
    return lambda profiles: _per_profile(profiles, lambda p: _fmt(_BY_PATH[path].value(p)))


def _variant_fields(field: str, names: Iterable[str] = GAN_NAMES) -> tuple[str, ...]:
    return tuple(f"gan.variants.{name}.{field}" for name in names)


def _has_wgan(profile: Profile) -> bool:
    return any(s.n_critic > 1 or s.gp_weight > 0 for s in profile.gan.variants.values())


def _notebook_default(notebook: Path, name: str) -> Any:
    """Default of parameter ``name`` in ``notebook``'s ``parameters`` cell; ``None`` if absent.

    Read with :mod:`ast` rather than papermill (:func:`tofmra_utils.pipeline.notebook_parameters`):
    importing papermill takes seconds, and staging the book should not.
    """
    try:
        cells = json.loads(notebook.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    for cell in cells:
        if cell.get("cell_type") != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                try:
                    return ast.literal_eval(node.value)
                except ValueError:
                    return None
    return None


