"""One GAN stage as notebooks 02-04 run it: one call per step, so the notebooks differ only where
they teach their GAN (the idea, the loss curves worth watching, the exercises).

Every function takes the notebook's :class:`~tofmra_utils.notebook.NotebookContext` for the
profile, the run folder's paths, the device and the seed; figures are saved under the run's
``results/`` folder with the GAN's name in the file name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..io import read_json
from ..patchset import PatchSet
from ..plots import intensity_histograms, patch_grid, sample_grid_timeline, save_figure
from ..profiles import Profile
from .generate import fixed_noise_pairs, generate_from_checkpoint
from .models import build_gan
from .quality import compare_sets
from .train import GanTrainResult, train_gan

__all__ = [
    "network_table",
    "settings_table",
    "train_stage",
    "snapshots_figure",
    "final_samples_figure",
    "synthetic_stage",
    "real_vs_synthetic",
    "record_and_check",
]


def network_table(name: str, profile: Profile) -> pd.DataFrame:
    """Parameters and layer widths of the generator and its critic (discriminator for DCGAN)."""
    generator, critic = build_gan(name, profile)
    channels = profile.gan.generator_channels
    z_dim = profile.gan.variants[name].z_dim
    return pd.DataFrame({
        "network": ["generator", "discriminator" if name == "dcgan" else "critic"],
        "parameters": [sum(p.numel() for p in m.parameters()) for m in (generator, critic)],
        "layers": [" -> ".join(map(str, (z_dim, *channels, 2))), " -> ".join(map(str, (2, *reversed(channels), 1)))],
    }).set_index("network")


#: Rows of :func:`settings_table`: label -> setting path in the profile (``{name}``: this GAN).
_SETTING_ROWS: dict[str, str] = {
    "z size": "gan.variants.{name}.z_dim", "learning rate": "gan.variants.{name}.lr",
    "Adam betas": "gan.variants.{name}.betas", "batch size": "gan.variants.{name}.batch_size",
    "epochs": "gan.variants.{name}.epochs", "at least this many generator steps": "gan.variants.{name}.min_steps",
    "critic steps per generator step": "gan.variants.{name}.n_critic",
    "gradient-penalty weight": "gan.variants.{name}.gp_weight", "init std": "gan.init_std",
    "generator upsampling": "gan.upsampling", "critic kernel": "gan.critic_kernel",
    "weight average (EMA decay)": "gan.ema_decay", "DiffAugment": "gan.diffaug",
    "snapshots scored on real validation patches": "gan.snapshots", "generated image scaling": "gan.image_scaling",
    "label threshold": "gan.label_threshold", "label threshold rule": "gan.label_threshold_rule",
}


def settings_table(name: str, profile: Profile) -> pd.DataFrame:
    """The GAN's settings under the profile, one row each, with the study's value beside.

    The training aids of issue 20 (step floor, other layers, EMA, DiffAugment, snapshots,
    label threshold rule) appear here too, so a reader sees at once what this run switched on;
    the book's deviations table says why.
    """
    from ..deviations import study_setting

    rows = {}
    for label, path in _SETTING_ROWS.items():
        setting = study_setting(path.format(name=name))
        rows[label] = {profile.name: _show(setting.value(profile)), "study": _show(setting.study)}
    return pd.DataFrame.from_dict(rows, orient="index")


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value)) if value else "none"
    return str(value)


def train_stage(ctx: Any, name: str, train: PatchSet, retrain: bool = False) -> GanTrainResult:
    """Train (or resume, or reuse) the GAN in the run's ``gans/<name>/`` folder; prints its cost."""
    result = train_gan(name, train, ctx.profile, ctx.paths.gan_dir(name), device=ctx.device, seed=ctx.seed,
                       resume=not retrain, progress=not ctx.headless)
    print(f"{result.steps} generator steps in {result.seconds:.0f} s of training "
          f"({result.seconds / max(result.steps, 1):.2f} s per step on {ctx.device.type})")
    if result.label_alerts:
        steps = ", ".join(f"{s} ({f:.4f})" for s, f in result.label_alerts)
        last_check_low = result.label_alerts[-1][0] == result.steps  # the last sample check is at the last step
        back = "it had not come back by the last check" if last_check_low else "it was back above that at the end"
        print(f"label monitor: the samples' vessel fraction fell below a tenth of the real one at step(s) {steps}; {back}")
    return result


def snapshots_figure(result: GanTrainResult, n: int = 3) -> Figure:
    """The fixed-noise sample grids at the first, middle and last recorded steps."""
    steps = result.sample_steps
    keys = list(steps)
    shown = [keys[0], keys[len(keys) // 2], keys[-1]] if len(keys) >= n else keys
    return sample_grid_timeline({k: steps[k] for k in shown})


def final_samples_figure(ctx: Any, name: str, result: GanTrainResult, n: int = 16) -> Figure:
    """The final generator on the first ``n`` fixed noise vectors: labels overlaid, then below.

    Both figures are saved (``<name>_samples_overlay.png``, ``<name>_samples_below.png``); the
    second is returned.
    """
    image, label = fixed_noise_pairs(result.checkpoint, device=ctx.device)
    image, label = image[:n], label[:n]
    fig = patch_grid(image, label, ncols=8, title=f"{name}: final samples from the fixed noise, labels in red")
    save_figure(fig, ctx.paths.figure_file(f"{name}_samples_overlay.png"))
    fig = patch_grid(image, label, ncols=8, title=f"{name}: the same pairs, label below its image", show_labels="below")
    save_figure(fig, ctx.paths.figure_file(f"{name}_samples_below.png"))
    return fig


def synthetic_stage(ctx: Any, name: str, result: GanTrainResult) -> tuple[PatchSet, dict[str, Any]]:
    """Generate the GAN's synthetic training set into ``synthetic/<name>/``; returns it and its datasheet.

    When the run kept snapshots (``GanConfig.snapshots > 1``) each is scored on the real
    *validation* patches first (:func:`~tofmra_utils.gan.selection.select_snapshot`) and the best
    generates. The datasheet reports the label threshold used beside the one matching the real
    training vessel fraction.
    """
    selection = None  # the real training vessel fraction comes from the checkpoint, stored at training
    gan = ctx.profile.gan
    scales = gan.label_fraction_scales if gan.label_threshold_rule == "match_real" else (1.0,)
    if gan.snapshots > 1 or len(scales) > 1:
        from .selection import select_snapshot

        selection = select_snapshot(result.checkpoint, ctx.dataset("A").patches("val"), seed=ctx.seed,
                                    device=ctx.device, fraction_scales=scales)
        print("Scores: Dice on the real validation patches of a small U-net trained briefly on each candidate's pairs")
        if selection["scores"]:
            print("  snapshots: " + ", ".join(f"step {k}: {v:.3f}" for k, v in selection["scores"].items())
                  + f" -> step {selection['step']}")
        if len(scales) > 1:
            print("  label fraction (x the real one): " + ", ".join(f"{k}: {v:.3f}" for k, v in selection["scale_scores"].items())
                  + f" -> {selection['label_fraction_scale']}")
        print(f"  ({selection['seconds']:.0f} s)")
    file = generate_from_checkpoint(result.checkpoint, n=gan.n_synthetic, out_dir=ctx.paths.synthetic_dir(name),
                                    seed=ctx.seed, snapshot=selection["snapshot"] if selection else None, selection=selection,
                                    label_fraction_scale=selection["label_fraction_scale"] if selection else scales[0])
    synthetic = PatchSet.load(file)
    datasheet = read_json(ctx.paths.datasheet_file(name))
    source = ("the weight average (EMA)" if datasheet["weights"] == "ema" else "the generator") + (
        f" at step {datasheet['generator_step']}" + (" (the chosen snapshot)" if datasheet["snapshot"] else " (end of training)"))
    scale = datasheet.get("label_fraction_scale", 1.0)
    rule = ("the study's fixed threshold" if datasheet["threshold_rule"] == "fixed" else
            f"where the synthetic vessel fraction is {scale:g}x the real one")
    print(f"{len(synthetic)} synthetic pairs from {source}; labels at threshold {datasheet['threshold']:.3f} ({rule}; "
          f"stored threshold {datasheet['stored_threshold']:g}) -> {file}")
    return synthetic, datasheet


def real_vs_synthetic(ctx: Any, name: str, train: PatchSet, synthetic: PatchSet) -> tuple[pd.DataFrame, Figure]:
    """:func:`~tofmra_utils.gan.quality.compare_sets` of the two sets and their intensity histograms (saved)."""
    stats = compare_sets({"real": train, name: synthetic})
    fig = intensity_histograms({"real": (train.image, train.label), name: (synthetic.image, synthetic.label)},
                               title="intensity inside and outside the labels")
    save_figure(fig, ctx.paths.figure_file(f"{name}_histograms.png"))
    return stats, fig


def _generation_record(sheet: dict[str, Any]) -> dict[str, Any]:
    """What made the synthetic set, from its datasheet: weights, step, thresholds, snapshot choice."""
    selection = sheet.get("selection") or {}
    return {
        "generated_from": sheet.get("weights"), "generated_step": sheet.get("generator_step"),
        "threshold": sheet.get("threshold"), "threshold_rule": sheet.get("threshold_rule"),
        "threshold_matching_real": sheet.get("threshold_matching_real"),
        "label_fraction_scale": sheet.get("label_fraction_scale"),
        "selection_scores": selection.get("scores"), "selection_seconds": selection.get("seconds"),
    }


def record_and_check(
    ctx: Any, name: str, result: GanTrainResult, synthetic: PatchSet, stats: pd.DataFrame
) -> dict[str, Any]:
    """Record the stage's key results for ``summary.json`` and check that it did what it claims.

    Checks (``AssertionError`` with the reason): finite losses, the schedule finished, the
    synthetic set has the profile's size and patch size, binary labels, images in [-1, 1]; beyond
    the ``smoke`` profile (whose GANs train a few steps only) also a synthetic vessel fraction
    within 0.2-5x the real one and labels on brighter pixels than the rest.
    """
    history = result.history
    real, syn = stats["real"].astype(float).to_dict(), stats[name].astype(float).to_dict()
    recorded = ctx.record(
        gan=name, train_seconds=round(result.seconds, 1), generator_steps=result.steps,
        final_d_loss=round(float(history["d_loss"].iloc[-1]), 4), final_g_loss=round(float(history["g_loss"].iloc[-1]), 4),
        n_synthetic=len(synthetic),
        **{f"{key}_{which}": round(values[key], 4 if key == "vessel_fraction" else 3)
           for key in ("vessel_fraction", "inside_outside_ratio", "label_on_bright", "pair_distance")
           for which, values in (("real", real), ("synthetic", syn))},
        sample_grid=str(result.sample_grids[-1]), synthetic_file=str(ctx.paths.synthetic_file(name)),
        **_generation_record(read_json(ctx.paths.datasheet_file(name))),
        label_alerts=len(result.label_alerts),
    )
    size = ctx.profile.data.patch_size
    assert np.isfinite(history[["d_loss", "g_loss"]].to_numpy()).all(), "losses must stay finite"
    assert result.steps == result.total_steps, "training did not finish"
    assert len(synthetic) == ctx.profile.gan.n_synthetic and synthetic.image.shape[1:] == (size, size)
    assert set(np.unique(synthetic.label)) <= {0, 1}, "labels must be binary"
    assert synthetic.image.min() >= -1 and synthetic.image.max() <= 1
    if ctx.profile.name != "smoke":
        ratio = syn["vessel_fraction"] / real["vessel_fraction"]
        assert 0.2 < ratio < 5, f"synthetic vessel fraction is {ratio:.2f}x the real one"
        assert syn["inside_outside_ratio"] > 1, "synthetic labels should sit on brighter pixels"
    return recorded
