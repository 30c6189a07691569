"""`tofmra clean`: checkpoints and data go, results, figures, notebooks and logs stay."""

from __future__ import annotations

import datetime
import json
import os
import socket

from tofmra_utils.cleanup import clean_run, folder_bytes, human_bytes, removable_files
from tofmra_utils.cli import main


def _run_folder(root):
    files = {
        "summary.json": b"{}", "results/unet_boxplots.png": b"p" * 100, "notebooks/05.ipynb": b"n" * 50,
        "gans/dcgan/checkpoint.pt": b"c" * 1000, "gans/dcgan/snapshots/step_000010.pt": b"s" * 500,
        "gans/dcgan/losses.csv": b"l" * 20, "synthetic/dcgan/patches.npz": b"z" * 2000,
        "synthetic/dcgan/datasheet.json": b"d" * 10, "data/site_A/volumes/A-001.nii.gz": b"v" * 3000,
        "unets/real/best.pt": b"b" * 700, "unets/real/history.csv": b"h" * 30,
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_clean_keeps_what_a_reader_needs(tmp_path, capsys):
    files = _run_folder(tmp_path)
    total = folder_bytes(tmp_path)
    assert total == sum(len(v) for v in files.values())
    assert main(["clean", "--run", str(tmp_path), "--dry-run"]) == 0
    assert "would free 7.0 KB" in capsys.readouterr().out and folder_bytes(tmp_path) == total
    assert [p.name for p in removable_files(tmp_path, keep=("data",))] == ["checkpoint.pt", "step_000010.pt", "best.pt"]
    freed, left = clean_run(tmp_path, keep=("checkpoints",))
    assert freed == 5000 and (tmp_path / "gans/dcgan/checkpoint.pt").exists()
    assert main(["clean", "--run", str(tmp_path)]) == 0
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert remaining == ["gans/dcgan/losses.csv", "notebooks/05.ipynb", "results/unet_boxplots.png", "summary.json",
                         "synthetic/dcgan/datasheet.json", "unets/real/history.csv"]
    assert human_bytes(1536) == "1.5 KB" and human_bytes(3 * 2**30) == "3.0 GB"


def test_clean_refuses_a_folder_that_is_not_a_run_or_is_in_use(tmp_path, capsys):
    assert main(["clean", "--run", str(tmp_path)]) == 2
    assert "summary.json: not a run folder" in capsys.readouterr().err
    _run_folder(tmp_path)
    lock = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"), "command": "tofmra run"}
    (tmp_path / ".tofmra-run.lock").write_text(json.dumps(lock))
    assert main(["clean", "--run", str(tmp_path)]) == 2
    assert "clean it once that run has ended" in capsys.readouterr().err
    assert (tmp_path / "gans/dcgan/checkpoint.pt").exists(), "nothing removed while a run holds the folder"
