"""The table of deviations from the study: complete, read from the profiles, and shown by the book."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from tofmra_utils.book import APPENDIX_PAGES, DEVIATIONS_MARKER, DEVIATIONS_PAGE, stage_book
from tofmra_utils.deviations import (
    AREAS,
    STUDY_SETTINGS,
    TABLE_COLUMNS,
    deviations,
    deviations_markdown,
    deviations_table,
    study_mismatches,
    uncovered_settings,
)
from tofmra_utils.io import DataError
from tofmra_utils.profiles import PROFILES, UnknownProfileError
from tofmra_utils.runs import repo_root


def _by_topic(profiles=None) -> dict:
    return {d.topic: d for d in deviations(profiles)}


def _with(name: str, **changes) -> dict:
    """PROFILES with profile ``name`` changed: ``unet={"lr": 2e-4}`` replaces fields of ``unet``."""
    profile = PROFILES[name]
    parts = {part: dataclasses.replace(getattr(profile, part), **fields) for part, fields in changes.items()}
    return {**PROFILES, name: dataclasses.replace(profile, **parts)}


# ----------------------------------------------------------------------------- the entries
def test_every_entry_is_complete_and_names_valid_profiles():
    rows = deviations()
    assert len(rows) >= 30
    assert len({d.topic for d in rows}) == len(rows), "topics must be unique"
    for d in rows:
        assert d.area in AREAS, d.topic
        for text in (d.topic, d.study, d.here, d.reason):
            assert text.strip(), f"{d.topic}: empty text"
        assert d.profiles and set(d.profiles) <= set(PROFILES), d.topic
        assert list(d.profiles) == [n for n in PROFILES if n in d.profiles], "profiles in PROFILES order"
        assert all(f in {s.path for s in STUDY_SETTINGS} for f in d.fields), d.topic


def test_the_topics_the_brief_asks_for_are_there():
    topics = set(_by_topic())
    for expected in ("Data source", "WGAN learning rate", "Weight initialization spread", "Gradient clipping",
                     "U-net weight initialization", "Gradient penalty and detached fakes", "DCGAN label smoothing",
                     "Spectral norm in the WGAN-GP-SN critic", "Generator mode when sampling", "Dropout placement",
                     "Data augmentation", "U-net input scaling", "Whole-volume inference",
                     "95th-percentile Hausdorff distance", "Choice of the fine-tuned weights", "Fine-tuning step budget",
                     "The `real` arm", "n = 0", "Real batches of the critic steps", "DCGAN generator loss"):
        assert expected in topics


def test_every_profile_setting_that_differs_from_the_study_is_explained():
    assert uncovered_settings() == []
    # The paper profile keeps the study's sizes: its only setting-level difference is the inference mode.
    assert study_mismatches(PROFILES["paper"]) == ("transfer.eval_mode",)


def test_a_new_unexplained_deviation_is_caught():
    changed = _with("paper", unet={"depth": 3})
    assert uncovered_settings(changed) == [("paper", "unet.depth")]


# ----------------------------------------------------------------------------- values come from the profiles
def test_values_are_read_from_the_profiles():
    rows = _by_topic()
    course, smoke = PROFILES["course"], PROFILES["smoke"]
    assert rows["WGAN learning rate"].profiles == ("course",)
    assert f"{course.gan.variants['wgan_gp'].lr:g}" in rows["WGAN learning rate"].here
    assert f"{course.unet.lr:g} (course)" in rows["U-net learning rate"].here
    assert f"{smoke.unet.lr:g} (smoke)" in rows["U-net learning rate"].here
    assert ", ".join(map(str, course.gan.generator_channels)) in rows["Generator and critic widths"].here
    assert f"{course.transfer.steps_for(10)}" in rows["Fine-tuning step budget"].here
    assert "paper" not in rows["Generator and critic widths"].profiles, "the paper profile has the study's widths"
    assert rows["The `real` arm"].profiles == tuple(n for n, p in PROFILES.items() if "real" in p.transfer.arms)


def test_a_changed_profile_changes_the_table():
    # A new value shows up in the text.
    rows = _by_topic(_with("course", unet={"lr": 2e-4}))
    assert "0.0002 (course)" in rows["U-net learning rate"].here
    assert "0.0005" not in rows["U-net learning rate"].here
    # The study's value takes the profile out of the row...
    rows = _by_topic(_with("course", gan={"init_std": 0.05}))
    assert rows["Weight initialization spread"].profiles == ("smoke",)
    # ...and a row that then concerns no profile disappears.
    both = _with("course", unet={"max_grad_norm": None})
    both["smoke"] = dataclasses.replace(PROFILES["smoke"], unet=dataclasses.replace(PROFILES["smoke"].unet,
                                                                                    max_grad_norm=None))
    assert "Gradient clipping" not in _by_topic(both)
    # A deviation a profile did not have appears for it.
    rows = _by_topic(_with("paper", unet={"weight_init": "he"}))
    assert rows["U-net weight initialization"].profiles == ("smoke", "course", "paper")


# ----------------------------------------------------------------------------- views
def test_table_per_profile_and_markdown():
    full = deviations_table()
    assert list(full.columns) == list(TABLE_COLUMNS) and len(full) == len(deviations())
    paper = deviations_table("paper")
    assert set(paper["profiles"]) == {"paper"} and 0 < len(paper) < len(full)
    assert "Patch size" not in set(paper["topic"])
    with pytest.raises(UnknownProfileError):
        deviations_table("laptop")

    md = deviations_markdown()
    lines = md.strip().splitlines()
    assert lines[0] == "| " + " | ".join(c.capitalize() for c in TABLE_COLUMNS) + " |"
    assert len(lines) == 2 + len(full)
    assert lines[1] == "|" + "---|" * len(TABLE_COLUMNS)
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[2:])
    # every row has exactly the header's number of cells (no stray, unescaped pipe)
    assert {line.replace("\\|", "").count("|") for line in lines[2:]} == {len(TABLE_COLUMNS) + 1}


# ----------------------------------------------------------------------------- the book
def _fake_run(tmp_path: Path) -> Path:
    """A run folder with one executed notebook, enough for stage_book."""
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    shutil.copy2(repo_root() / "notebooks" / "00_overview.ipynb", run / "notebooks" / "00_overview.ipynb")
    return run


def test_stage_book_writes_the_table_into_the_page(tmp_path):
    assert "differences" in APPENDIX_PAGES
    source = repo_root() / "book"
    assert DEVIATIONS_MARKER in (source / DEVIATIONS_PAGE).read_text().splitlines()

    stage = stage_book(_fake_run(tmp_path))
    page = (stage / DEVIATIONS_PAGE).read_text()
    assert DEVIATIONS_MARKER not in page
    assert deviations_markdown() in page
    assert page.startswith("# Differences from the study")
    assert "**Dropout placement**" in page
    toc = yaml.safe_load((stage / "_toc.yml").read_text())
    assert {"file": "differences"} in toc["chapters"]
    assert not list(stage.glob(".*partial*")), "no temporary file left"


def test_stage_book_refuses_a_page_without_the_marker(tmp_path):
    source = tmp_path / "book"
    shutil.copytree(repo_root() / "book", source, ignore=shutil.ignore_patterns("_build"))
    page = source / DEVIATIONS_PAGE
    page.write_text(page.read_text().replace(DEVIATIONS_MARKER, ""))
    with pytest.raises(DataError, match="marker"):
        stage_book(_fake_run(tmp_path), source=source)


def test_inference_row_reads_notebook_05s_parameters():
    """The row quotes notebook 05's own defaults; a wrong notebook path would silently give None."""
    from tofmra_utils.deviations.rules import _inference_mode
    from tofmra_utils.deviations.schema import _NOTEBOOK_05, _notebook_default

    assert _NOTEBOOK_05.exists(), _NOTEBOOK_05
    assert _inference_mode() == _notebook_default(_NOTEBOOK_05, "eval_mode") is not None
