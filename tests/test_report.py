"""Tables generated from summary.json: headline numbers, two runs side by side, the README block."""

from __future__ import annotations

import json

import pytest

from tofmra_utils.cli import main
from tofmra_utils.report import BEGIN, END, comparison_markdown, headlines, results_markdown, update_readme


def fake_summary(dsc_real: float = 0.88, gain: float = 0.05) -> dict:
    return {
        "profile": "course", "machine": "x86_64, 2 CPU cores", "threads": "2", "total_seconds": 1500.0,
        "finished": "2026-12-02T01:00:00",
        "notebooks": {
            "05_unet_synthetic_vs_real": {"seconds": 377.3, "results": {
                "n_test": 4, "dsc_real": dsc_real, "dsc_sd_real": 0.01, "dsc_wgan_gp_sn": 0.8, "dsc_sd_wgan_gp_sn": 0.03}},
            "06_transfer_learning": {"results": {
                "n_small": 1, "n_large": 10, "n_seeds": 3, "scratch_dsc_small": 0.7, "scratch_dsc_small_sd": 0.04,
                "synthetic_dsc_small": 0.75, "synthetic_dsc_small_sd": 0.02,
                "synthetic_gain_dsc_small": gain, "synthetic_gain_dsc_small_sd": 0.03,
                "synthetic_gain_dsc_large": 0.01, "synthetic_gain_dsc_large_sd": 0.02}},
        },
    }


def test_headlines_carry_value_spread_and_study_constant():
    rows = {h.quantity: h for h in headlines(fake_summary())}
    real = rows["U-net trained on real patches: test DSC"]
    assert (real.value, real.spread, real.over, real.study) == (0.88, 0.01, "sd over 4 test patients", 0.89)
    scratch = rows["site B, 1 subject, from scratch: test DSC"]
    assert scratch.study == 0.84 and scratch.over == "sd over 3 seeds"
    assert "U-net trained on DCGAN synthetic patches: test DSC" not in rows, "no number that the run did not record"


def test_results_markdown_names_its_run():
    text = results_markdown(fake_summary(), commit="abc1234")
    assert "| U-net trained on real patches: test DSC | 0.880 | ± 0.010 (sd over 4 test patients) | 0.89 |" in text
    assert "torch threads: 2" in text and "commit abc1234" in text and "25.0 min" in text
    assert "Wall time per notebook: 05 377 s." in text


def test_comparison_says_whether_a_difference_is_within_the_spread():
    text = comparison_markdown(fake_summary(0.88), fake_summary(0.905, gain=0.02))
    assert "| U-net trained on real patches: test DSC | 0.880 | 0.905 | +0.025 | 0.010 | no |" in text
    assert "| site B, 1 subject: gain of synthetic pretraining (DSC) | 0.050 | 0.020 | -0.030 | 0.030 | no |" in text
    assert "| site B, 10 subjects: gain of synthetic pretraining (DSC) | 0.010 | 0.010 | +0.000 | 0.020 | yes |" in text
    assert "| U-net trained on WGAN-GP-SN synthetic patches: test DSC | 0.800 | 0.800 | +0.000 | 0.030 | yes |" in text


def test_readme_block_is_replaced_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nold table\n{END}\n\nmore text\n")
    update_readme(readme, "new table")
    assert readme.read_text() == f"# title\n\n{BEGIN}\nnew table\n{END}\n\nmore text\n"


def test_cli_report_and_its_errors(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(fake_summary()))
    assert main(["report", "--run", str(run)]) == 0
    assert "0.880" in capsys.readouterr().out
    assert main(["report", "--run", str(tmp_path / "nothing")]) == 2
    assert "summary.json: no run summary" in capsys.readouterr().err
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert main(["report", "--run", str(run), "--readme", str(readme)]) == 2
    assert "no results block" in capsys.readouterr().err and readme.read_text() == "no markers\n"


@pytest.mark.parametrize("missing", ["05_unet_synthetic_vs_real", "06_transfer_learning"])
def test_a_partial_run_reports_what_it_has(missing):
    summary = fake_summary()
    del summary["notebooks"][missing]
    assert headlines(summary) and all(("site B" in h.quantity) == (missing != "06_transfer_learning") for h in headlines(summary))


def _seed_run(tmp_path, seed: int, dsc: dict[str, float], profile: str = "course"):
    run = tmp_path / f"seed{seed}"
    run.mkdir()
    results = {f"dsc_{k}": v for k, v in dsc.items()}
    (run / "summary.json").write_text(json.dumps({"profile": profile, "seed": seed, "notebooks": {
        "05_unet_synthetic_vs_real": {"results": results}}}))
    return run


def test_seed_spread_states_only_the_order_the_seeds_support(tmp_path, capsys):
    from tofmra_utils.report import seed_spread

    rows = [{"real": 0.90, "dcgan": 0.60, "wgan_gp": 0.80, "wgan_gp_sn": 0.81},
            {"real": 0.92, "dcgan": 0.62, "wgan_gp": 0.82, "wgan_gp_sn": 0.79},
            {"real": 0.91, "dcgan": 0.61, "wgan_gp": 0.78, "wgan_gp_sn": 0.83}]
    runs = [_seed_run(tmp_path, seed, dsc) for seed, dsc in enumerate(rows)]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    spread = seed_spread(summaries)
    assert spread["mean"]["real"] == pytest.approx(0.91) and spread["sd"]["real"] == pytest.approx(0.01)
    assert spread["ratio"] == pytest.approx([0.81 / 0.90, 0.82 / 0.92, 0.83 / 0.91])
    (a, b, first), (c, d, second) = spread["order"]
    assert (a, b, first) == ("wgan_gp_sn", "wgan_gp", False), "0.81 vs 0.80 with sds of 0.02: no order"
    assert (c, d, second) == ("wgan_gp", "dcgan", True)
    assert main(["report", "--run", str(runs[0]), "--seeds", str(runs[1]), str(runs[2])]) == 0
    out = capsys.readouterr().out
    assert "0.910 ± 0.010" in out and "WGAN-GP-SN ≈ WGAN-GP, WGAN-GP > DCGAN" in out
    other = _seed_run(tmp_path, 7, rows[0], profile="smoke")
    assert main(["report", "--run", str(runs[0]), "--seeds", str(other)]) == 2
    assert "different profiles" in capsys.readouterr().err
    assert main(["report", "--run", str(runs[0]), "--seeds", str(runs[0])]) == 2
    assert "repeat a seed" in capsys.readouterr().err


def test_privacy_audit_headlines_come_from_notebook_07():
    summary = {"notebooks": {"07_privacy_audit": {"status": "ok", "results": {
        "primary_features": "pixels", "copy_rate_wgan_gp": 0.012, "mia_auc_wgan_gp": 0.53}}}}
    rows = {h.quantity: h.value for h in headlines(summary)}
    assert rows == {"WGAN-GP synthetic set: copy rate (privacy audit, pixels)": 0.012,
                    "WGAN-GP synthetic set: membership-inference AUC (black-box; 0.5 = no leak)": 0.53}
    assert "| WGAN-GP synthetic set: copy rate (privacy audit, pixels) | 0.012 | - | - |" in results_markdown(summary)


def test_results_markdown_says_how_notebook_05_chose_its_inference():
    from tofmra_utils.report import results_markdown

    summary = {"notebooks": {"05_unet_synthetic_vs_real": {"results": {
        "dsc_real": 0.9, "eval_mode": "sliding", "eval_scaling": "volume", "inference_chosen_on": "validation volumes"}}}}
    assert "`sliding` tiling, `volume` scaling, chosen on the validation volumes" in results_markdown(summary, "abc")
    summary["notebooks"]["05_unet_synthetic_vs_real"]["results"]["inference_chosen_on"] = "notebook parameters"
    assert "set by the notebook's parameters" in results_markdown(summary, "abc")
