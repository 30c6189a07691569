"""The registry as rows, a DataFrame and the book's Markdown table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..profiles import PROFILES, get_profile
from .rules import _RULES
from .schema import TABLE_COLUMNS, Deviation, Profiles, study_mismatches

if TYPE_CHECKING:  # pandas only for the DataFrame view; staging the book needs no pandas
    import pandas as pd


# ============================================================================ views
def deviations(profiles: Profiles | None = None) -> tuple[Deviation, ...]:
    """Every deviation that concerns at least one of ``profiles`` (default: :data:`PROFILES`).

    Values and the ``profiles`` of each row are computed from the given profiles, so a changed
    profile (``dataclasses.replace``) changes the rows.
    """
    profiles = PROFILES if profiles is None else profiles
    built = (rule.build(profiles) for rule in _RULES)
    return tuple(d for d in built if d is not None)


def uncovered_settings(profiles: Profiles | None = None) -> list[tuple[str, str]]:
    """``(profile, setting)`` pairs that differ from the study but no row accounts for.

    Empty when the table is complete; a new deviation in a profile appears here until a rule with
    that setting in its ``fields`` explains it.
    """
    profiles = PROFILES if profiles is None else profiles
    covered = {(name, field) for d in deviations(profiles) for name in d.profiles for field in d.fields}
    return [(name, path) for name, p in profiles.items() for path in study_mismatches(p) if (name, path) not in covered]


def _select(profile: str | None, profiles: Profiles | None) -> Profiles:
    profiles = PROFILES if profiles is None else profiles
    if profile is None:
        return profiles
    if profile not in profiles:
        get_profile(profile)  # raises UnknownProfileError with the valid names
        raise KeyError(profile)
    return {profile: profiles[profile]}


def deviations_table(profile: str | None = None, profiles: Profiles | None = None) -> "pd.DataFrame":
    """The deviations as a DataFrame with columns :data:`TABLE_COLUMNS`, one row each.

    Parameters
    ----------
    profile
        Only the rows concerning this profile, with only its values (default: all profiles).
    profiles
        The profiles to describe (default :data:`PROFILES`; tests pass modified ones).

    Raises
    ------
    tofmra_utils.profiles.UnknownProfileError
        For a profile name that is not one of ``smoke``, ``course``, ``paper``.
    """
    import pandas as pd

    rows = [d.row() for d in deviations(_select(profile, profiles))]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _cell(text: str) -> str:
    """Table-cell-safe Markdown: one line, literal pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def deviations_markdown(profile: str | None = None, profiles: Profiles | None = None) -> str:
    """The deviations as one Markdown (MyST) table, ending with a newline.

    Parameters as for :func:`deviations_table`.
    """
    header = [c.capitalize() for c in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for d in deviations(_select(profile, profiles)):
        row = d.row()
        row["topic"] = f"**{row['topic']}**"
        lines.append("| " + " | ".join(_cell(row[c]) for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"
