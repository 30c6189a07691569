"""Notebook-05 helpers: synthetic-set loading, same-budget training, the study-format table, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from tofmra_utils import plots
from tofmra_utils.io import DataError
from tofmra_utils.patchset import PatchSet
from tofmra_utils.profiles import get_profile
from tofmra_utils.runs import RunPaths
from tofmra_utils.unet.experiment import (
    load_synthetic_sets,
    ranking_sentence,
    summary_table,
    train_models,
    gap_diagnosis,
    training_set_diagnostics,
    AGREEMENT,
)




def lines(n: int, seed: int, size: int = 16) -> PatchSet:
    rng = np.random.default_rng(seed)
    label = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        label[i, :, rng.integers(2, size - 2) + np.arange(-1, 1)] = 1
    image = rng.normal(0, 0.3, label.shape) + 2.0 * label
    image = 2 * (image - image.min(axis=(1, 2), keepdims=True)) / np.ptp(image, axis=(1, 2), keepdims=True) - 1
    return PatchSet(image=image, label=label, subject=np.full(n, "s"), kind=np.zeros(n), centre=np.zeros((n, 3)))


def test_missing_synthetic_set_names_the_notebook(tmp_path):
    paths = RunPaths(tmp_path)
    lines(4, 0).save(paths.synthetic_file("dcgan"))
    assert len(load_synthetic_sets(paths, ["dcgan"])["dcgan"]) == 4
    with pytest.raises(DataError, match="run notebook 03_wgan_gp first"):
        load_synthetic_sets(paths, ["dcgan", "wgan_gp"])


def test_train_models_gives_every_set_the_same_budget(tmp_path):
    prof = get_profile("smoke")
    import dataclasses

    prof = dataclasses.replace(prof, unet=dataclasses.replace(prof.unet, depth=2, base_width=2, batch_size=8, epochs=1,
                                                              max_steps=None))
    sets = {"real": lines(16, 0), "dcgan": lines(40, 1)}  # the synthetic set is larger
    models = train_models(sets, lines(8, 2), prof, RunPaths(tmp_path), seed=0, progress=False)
    assert [len(m.history) for m in models.values()] == [2, 2]  # 1 epoch of the real set: 16 / 8
    assert (tmp_path / "unets" / "dcgan" / "best.pt").exists()
    # Validation at the same steps for both.
    assert models["real"].history["val_dice"].notna().tolist() == models["dcgan"].history["val_dice"].notna().tolist()
    diag = training_set_diagnostics(sets, models["real"].checkpoint, device="cpu")
    assert list(diag["set"]) == ["real", "dcgan"] and list(diag["label"]) == ["real", "DCGAN"] and diag[AGREEMENT].between(0, 1).all()
    assert diag["vessel fraction"].iloc[0] == pytest.approx(sets["real"].vessel_fraction(), abs=1e-4)


def per_patient_table() -> pd.DataFrame:
    rows = []
    for name, dsc in (("real", (0.8, 0.9)), ("dcgan", (0.5, 0.6)), ("wgan_gp", (0.6, 0.7)), ("wgan_gp_sn", (0.7, 0.8))):
        for i, d in enumerate(dsc):
            rows.append({"model": name, "subject": f"s{i}", "dsc": d, "hd95_mm": 10 * (1 - d), "hd95_study": np.nan if i else 5.0})
    return pd.DataFrame(rows)


def test_summary_table_and_ranking():
    summary = summary_table(per_patient_table())
    assert list(summary["model"]) == ["real", "dcgan", "wgan_gp", "wgan_gp_sn"], "keys, as in the per-patient table"
    assert list(summary["label"]) == ["real", "DCGAN", "WGAN-GP", "WGAN-GP-SN"]
    real = summary.iloc[0]
    assert real["DSC"] == "0.850 ± 0.071" and real["dsc_mean"] == pytest.approx(0.85)
    assert real["study DSC"] == 0.89 and real["study 95HD (tool units)"] == 26.57
    assert np.isnan(summary.iloc[1]["study DSC"])
    assert real["95HD (voxels, exact: lower bound of the tool's value)"] == "5.00 ± 0.00" and real["hd95_nan"] == 0
    sentence = ranking_sentence(summary)
    assert sentence.startswith("Ranking by mean test DSC: real (0.850), WGAN-GP-SN (0.750), WGAN-GP (0.650), DCGAN (0.550).")
    assert "0.100 DSC below" in sentence and "matches the study's" in sentence
    swapped = per_patient_table().replace({"model": {"dcgan": "wgan_gp_sn", "wgan_gp_sn": "dcgan"}})
    assert "differs from the study's" in ranking_sentence(summary_table(swapped))


def test_error_colours_and_figures():
    rgb = plots.error_rgb(np.array([[1, 0], [1, 0]]), np.array([[1, 1], [0, 0]]))
    assert tuple(rgb[0, 0]) == plots.ERROR_RGB["TP"] and tuple(rgb[0, 1]) == plots.ERROR_RGB["FN"]
    assert tuple(rgb[1, 0]) == plots.ERROR_RGB["FP"] and tuple(rgb[1, 1]) == (0, 0, 0)
    truth = np.zeros((12, 10, 4), bool)
    truth[3:9, 5, :] = True
    pred = np.roll(truth, 1, axis=1)
    fig = plots.segmentation_errors(np.random.default_rng(0).random(truth.shape), truth, pred, title="x")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    fig = plots.metric_boxplots(per_patient_table(), metrics=("dsc", "hd95_study"))
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["real", "dcgan", "wgan_gp", "wgan_gp_sn"]
    plots.plt.close("all")


def _tables(real_dsc, syn_dsc, syn_agree, syn_fraction, syn_inside):
    summary = pd.DataFrame({"model": ["real", "dcgan", "wgan_gp_sn"], "dsc_mean": [real_dsc, syn_dsc - 0.1, syn_dsc]})
    diagnostics = pd.DataFrame({
        "set": ["real", "dcgan", "wgan_gp_sn"],
        "vessel fraction": [0.03, 0.01, syn_fraction],
        "intensity inside label": [0.5, 0.0, syn_inside],
        "intensity outside label": [-0.5, -0.5, -0.5],
        AGREEMENT: [0.9, 0.3, syn_agree],
    })
    return summary, diagnostics


def test_gap_diagnosis_names_the_causes_it_measures():
    # inconsistent pairs, fewer vessels, fainter vessels (contrast 0.7 vs 1.0)
    text = gap_diagnosis(*_tables(0.885, 0.729, syn_agree=0.65, syn_fraction=0.022, syn_inside=0.2))
    assert "WGAN-GP-SN" in text and "0.156 DSC" in text
    assert "disagree" in text and "0.65" in text and "0.73x the real vessel fraction" in text and "fainter" in text
    # only the label threshold is off
    text = gap_diagnosis(*_tables(0.885, 0.70, syn_agree=0.88, syn_fraction=0.045, syn_inside=0.5))
    assert "1.50x the real vessel fraction" in text and "disagree" not in text and "fainter" not in text
    # nothing measurable is off: say so instead of inventing a cause
    text = gap_diagnosis(*_tables(0.885, 0.70, syn_agree=0.88, syn_fraction=0.03, syn_inside=0.5))
    assert "do not see" in text
    # close to real, as in the study
    assert "within 0.05 DSC" in gap_diagnosis(*_tables(0.885, 0.86, syn_agree=0.6, syn_fraction=0.01, syn_inside=0.0))
    assert "0.100 DSC above" in gap_diagnosis(*_tables(0.60, 0.70, syn_agree=0.6, syn_fraction=0.01, syn_inside=0.0))


def test_gan_costs_reads_what_notebooks_02_04_recorded(tmp_path):
    from tofmra_utils.unet.experiment import gan_costs

    class Ctx:
        def recorded(self, notebook):
            if notebook == "02_dcgan":
                return {"generator_steps": 1000, "train_seconds": 130.6, "generated_from": "final", "generated_step": 750,
                        "threshold": 0.1639, "threshold_rule": "match_real", "label_fraction_scale": 1.5}
            if notebook == "03_wgan_gp":
                return {"generator_steps": 625, "train_seconds": 210.9, "threshold": 0.8}
            raise DataError(tmp_path / f"{notebook}.json", "file not found")

    costs = gan_costs(Ctx())
    assert list(costs.index) == ["dcgan", "wgan_gp"], "a GAN whose notebook recorded nothing is left out"
    assert costs.loc["dcgan", "label threshold"] == "0.164 (match_real, 1.5x real fraction)"
    assert costs.loc["wgan_gp", "label threshold"] == "0.800 (fixed)"
    assert costs.loc["dcgan", "generated from"] == "final weights, step 750"
    assert costs.loc["wgan_gp", "generated from"] == "final weights, step 625"


def test_inference_comparison_sets_two_inferences_side_by_side():
    from tofmra_utils.unet.experiment import inference_comparison

    main = per_patient_table().assign(fp_brain_edge=10.0, fp_interior=4.0)
    other = main.assign(dsc=main["dsc"] - 0.1, fp_brain_edge=np.where(main["model"] == "real", 100.0, 30.0))
    both = inference_comparison(("sliding", main, summary_table(main)), ("tiles", other, summary_table(other)),
                                ["real", "wgan_gp_sn", "wgan_gp", "dcgan"])
    assert list(both.index) == ["real", "WGAN-GP-SN", "WGAN-GP", "DCGAN"]  # the order asked for, display labels
    assert list(both.columns) == ["DSC (sliding)", "DSC (tiles)", "95HD mm (sliding)", "95HD mm (tiles)",
                                  "FP voxels per volume (sliding)", "FP voxels per volume (tiles)"]
    assert both.loc["real", "DSC (sliding)"].startswith("0.850 ± ") and both.loc["real", "DSC (tiles)"].startswith("0.750 ± ")
    assert both.loc["real", "FP voxels per volume (sliding)"] == 14 and both.loc["real", "FP voxels per volume (tiles)"] == 104
    assert both.loc["DCGAN", "FP voxels per volume (tiles)"] == 34
