"""The one resumable-unit rule: fingerprints, the mismatch policy, state and history files."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tofmra_utils.batches import BatchStream
from tofmra_utils.io import read_json
from tofmra_utils.resumable import ResumableUnit, array_digest, fingerprint, settings_diff


def test_fingerprint_depends_on_values_not_key_order_or_tuples():
    assert fingerprint({"a": 1, "b": (2, 3)}) == fingerprint({"b": [2, 3], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_array_digest_sees_dtype_shape_and_values():
    import numpy as np

    x = np.zeros((2, 3), np.float32)
    assert array_digest(x) == array_digest(x.copy())
    assert array_digest(x) != array_digest(x.reshape(3, 2))
    assert array_digest(x) != array_digest(x.astype(np.float64))
    y = x.copy()
    y[1, 2] = 1
    assert array_digest(x) != array_digest(y)


def test_settings_diff_names_what_changed():
    text = settings_diff({"lr": 5e-4, "unet": {"width": 16}, "seed": 1}, {"lr": 1e-3, "unet": {"width": 8}, "seed": 1})
    assert text == "lr 0.0005 -> 0.001; unet.width 16 -> 8"


def test_matching_unit_keeps_its_files(tmp_path):
    unit = ResumableUnit(tmp_path / "u", {"lr": 1})
    unit.open()
    unit.save_state({"step": 3})
    unit.write_history(pd.DataFrame({"step": [1, 2, 3]}))
    again = ResumableUnit(tmp_path / "u", {"lr": 1})
    again.open()
    assert again.load_state()["step"] == 3 and again.history_file.exists()
    assert read_json(again.run_file)["status"] == "running"


def test_changed_settings_reset_the_unit_and_say_why(tmp_path):
    messages = []
    first = ResumableUnit(tmp_path / "u", {"lr": 1, "seed": 0}, owned=["samples"])
    first.open()
    first.save_state({"step": 3})
    first.write_history(pd.DataFrame({"step": [1]}))
    (tmp_path / "u" / "samples").mkdir()
    (tmp_path / "u" / "samples" / "a.png").write_bytes(b"x")
    (tmp_path / "u" / "keep.txt").write_text("not the unit's")
    second = ResumableUnit(tmp_path / "u", {"lr": 2, "seed": 0}, owned=["samples"], log=messages.append)
    second.open()
    assert messages == [f"{tmp_path / 'u'}: settings changed since the stored run (lr 1 -> 2); starting afresh"]
    assert second.load_state() is None and not second.history_file.exists()
    assert not (tmp_path / "u" / "samples").exists() and (tmp_path / "u" / "keep.txt").exists()
    assert read_json(second.run_file)["settings"] == {"lr": 2, "seed": 0}


def test_state_rejected_by_the_budget_or_unreadable_starts_afresh(tmp_path):
    messages = []
    unit = ResumableUnit(tmp_path / "u", {"lr": 1}, log=messages.append)
    unit.open()
    unit.save_state({"step": 10})
    assert unit.load_state(lambda s: s["step"] <= 5) is None
    assert "does not fit this run's budget" in messages[-1] and not unit.state_file.exists()
    unit.state_file.write_bytes(b"not a checkpoint")
    assert unit.load_state() is None and "unreadable training state" in messages[-1]
    assert unit.matches(), "the unit is open again after a reset"


def test_files_without_a_record_are_not_trusted(tmp_path):
    messages = []
    (tmp_path / "u").mkdir()
    torch.save({"step": 1}, tmp_path / "u" / "state.pt")
    unit = ResumableUnit(tmp_path / "u", {"lr": 1}, log=messages.append)
    unit.open()
    assert unit.load_state() is None and "no record of the settings" in messages[0]


def test_finish_and_result(tmp_path):
    unit = ResumableUnit(tmp_path / "u", {"lr": 1})
    unit.open()
    assert not unit.is_done() and unit.result() is None
    unit.finish({"dsc": 0.5})
    assert unit.is_done() and unit.result() == {"dsc": 0.5}
    assert ResumableUnit(tmp_path / "u", {"lr": 2}).result() is None
    unit.open(fresh=True)
    assert not unit.is_done()


@pytest.mark.parametrize("drop_last", [True, False])
def test_batch_stream_resumes_exactly(drop_last):
    stream = BatchStream(5, 2, torch.Generator().manual_seed(0), drop_last=drop_last)
    first_pass = [stream.next() for _ in range(2 if drop_last else 3)]
    assert len(set(torch.cat(first_pass).tolist())) == (4 if drop_last else 5), "no repeats within a pass"
    if not drop_last:
        assert len(first_pass[-1]) == 1, "the last batch of a pass holds what is left"
    saved = stream.state_dict()
    ahead = [stream.next() for _ in range(4)]
    stream.load_state_dict(saved)
    assert all(torch.equal(a, stream.next()) for a in ahead)
