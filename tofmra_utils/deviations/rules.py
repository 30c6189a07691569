"""The registry: one rule per deviation, by part of the pipeline (data, GAN, U-net, evaluation, transfer)."""

from __future__ import annotations

from typing import Any

from ..profiles import Profile
from .schema import (
    _NOTEBOOK_05,
    Profiles,
    _fmt,
    _has_wgan,
    _notebook_default,
    _per_profile,
    _positive,
    _Rule,
    _setting,
    _variant_fields,
)


# ---------------------------------------------------------------------------- data
def _subjects(p: Profile) -> str:
    d = p.data
    return f"{d.site_a_subjects} ({d.n_train} / {d.n_val} / {d.n_test})"


def _phantom_here(profiles: Profiles) -> str:
    shapes = _per_profile(profiles, lambda p: "x".join(map(str, p.data.volume_shape)))
    return ("phantom TOF-MRA volumes with exact vessel labels made by `tofmra_utils.phantom`: site A for the "
            "GANs and U-nets, site B (another voxel size, contrast, noise and bias) for transfer learning; "
            f"site-A volumes of {shapes} voxels (site B covers the same field of view at its own spacing)")


def _patches_here(profiles: Profiles) -> str:
    return _per_profile(profiles, lambda p: (f"{_fmt(p.data.patches_per_subject)}, "
                                             f"{p.data.vessel_patch_fraction:.0%} of them centred on a vessel voxel"))


_DATA: tuple[_Rule, ...] = (
    _Rule("data", "Data source",
          "PEGASUS: TOF-MRA of 66 patients (not public); a second, differently acquired patient data set "
          "(other site and scanner) for transfer learning",
          _phantom_here,
          "PEGASUS is not public. The phantom needs no download and its labels are exact, so the whole pipeline "
          "runs, and is tested, without patient data.",
          switch="`tofmra run --data DIR --data-b DIR` (your NIfTI volumes)"),
    _Rule("data", "Site-A subjects (train / val / test)", "66 (41 / 11 / 14)",
          lambda ps: _per_profile(ps, _subjects),
          "CPU time: the CPU profiles must generate, prepare and train on every subject within their budget "
          "(smoke: minutes for the tests; course: the whole pipeline under 30 minutes on 2 CPU cores).",
          fields=("data.site_a_subjects", "data.n_val", "data.n_test")),
    _Rule("data", "Patch size", "96 x 96 px",
          lambda ps: _per_profile(ps, lambda p: f"{p.data.patch_size} x {p.data.patch_size} px"),
          "CPU time: every network's cost grows with the pixels per patch. The GAN needs "
          "`patch_size = base * 2**len(generator_channels)`.",
          fields=("data.patch_size",)),
    _Rule("data", "Patches per subject", "1000, half centred on a vessel voxel, half at random brain positions",
          _patches_here,
          "CPU time (the same sampling rule, fewer patches).",
          fields=("data.patches_per_subject", "data.vessel_patch_fraction")),
)


# ---------------------------------------------------------------------------- GANs
def _widths(p: Profile) -> str:
    channels = p.gan.generator_channels
    base = p.data.patch_size // 2 ** len(channels)
    return f"{_fmt(channels)} from a {base}x{base} base"


def _schedule(p: Profile) -> str:
    v = p.gan.variants
    wgans = {(v[name].epochs, v[name].batch_size) for name in ("wgan_gp", "wgan_gp_sn")}
    if len(wgans) == 1:
        (epochs, batch), = wgans
        wgan = f"WGANs {epochs} epochs, batch {batch}"
    else:
        wgan = "; ".join(f"{name} {v[name].epochs} epochs, batch {v[name].batch_size}"
                         for name in ("wgan_gp", "wgan_gp_sn"))
    return f"DCGAN {v['dcgan'].epochs} epochs, batch {v['dcgan'].batch_size}; {wgan}"


def _wgan_lr(p: Profile) -> str:
    v = p.gan.variants
    lrs = {_fmt(v[name].lr) for name in ("wgan_gp", "wgan_gp_sn")}
    return f"Adam lr {' / '.join(sorted(lrs))}, betas ({_fmt(v['wgan_gp'].betas)})"


def _real_patches(p: Profile) -> int:
    return p.data.n_train * p.data.patches_per_subject


def _n_synthetic_here(profiles: Profiles) -> str:
    if all(p.gan.n_synthetic == _real_patches(p) for p in profiles.values()):
        counts = _per_profile(profiles, lambda p: _fmt(p.gan.n_synthetic))
        return f"{counts}: as many as the profile's real training patches"
    return _per_profile(profiles, lambda p: (f"{_fmt(p.gan.n_synthetic)} for {_fmt(_real_patches(p))} real "
                                             "training patches"))


def _which_generator(p: Profile) -> str:
    weights = f"the weight average (EMA, decay {_fmt(p.gan.ema_decay)})" if p.gan.ema_decay else "the generator"
    if p.gan.snapshots > 1:
        return (f"{weights} at the best of {p.gan.snapshots} snapshots over the second half of training, scored by "
                "the Dice on the real validation patches of a small U-net trained briefly on each snapshot's pairs")
    return f"{weights} at the end of the schedule (the last `checkpoint.pt`)"


def _fresh_batches_here(profiles: Profiles) -> str:
    n_critic = _per_profile(profiles, lambda p: _fmt(max(s.n_critic for s in p.gan.variants.values())))
    return (f"each of the {n_critic} critic steps draws the next real batch; an epoch still counts N / batch "
            "generator steps, so a WGAN critic sees each real patch n_critic times per epoch")


_STUDY_CODE_NOTE = ("The `paper` profile follows the study's code here; the CPU profiles keep this project's choice, "
                    "with which their budgets were tuned (not measured against the study's way).")

_GAN: tuple[_Rule, ...] = (
    _Rule("GAN", "Generator and critic widths", "generator 1536, 768, 384, 192, 96 from a 3x3 base (96 px); the "
          "critic mirrors it", lambda ps: _per_profile(ps, _widths),
          "CPU time: the course profile's GANs are far narrower than the study's so that they train within the "
          "course budget; the output size follows the patch size.",
          fields=("gan.generator_channels",)),
    _Rule("GAN", "GAN epochs and batch size", "DCGAN 300 epochs, batch 250; WGAN-GP and WGAN-GP-SN 200 epochs, "
          "batch 300", lambda ps: _per_profile(ps, _schedule),
          "CPU time.",
          fields=(*_variant_fields("epochs"), *_variant_fields("batch_size"))),
    _Rule("GAN", "WGAN learning rate", "Adam lr 0.0001, betas (0, 0.9)", lambda ps: _per_profile(ps, _wgan_lr),
          "Measured in the course profile (profiles.py): a WGAN generator step costs 5 critic steps with a double "
          "backward, so a 2-core CPU affords a few hundred generator steps; with lr 0.0001 the WGANs gave blobs "
          "without labels in that budget, with 0.0005 they learn vessels.",
          fields=_variant_fields("lr", ("wgan_gp", "wgan_gp_sn"))),
    _Rule("GAN", "Synthetic pairs per GAN", "41,000 (as many as the real training patches)",
          _n_synthetic_here,
          "Follows the smaller real training set of the CPU profiles (the study's rule: as many synthetic pairs "
          "as real patches).",
          fields=("gan.n_synthetic",)),
    _Rule("GAN", "Weight initialization spread", "conv weights N(0, 0.05)",
          lambda ps: _per_profile(ps, lambda p: f"N(0, {_fmt(p.gan.init_std)})"),
          "Measured (profiles.py, `GanConfig.init_std`): with 0.05 the DCGAN's discriminator wins at once on the "
          "course data and the generator collapses to noise within the short CPU schedule; 0.02 is the DCGAN "
          "paper's value.",
          fields=("gan.init_std",)),
    _Rule("GAN", "Initialization of normalization layers",
          "the study's `weights_init` draws batch-norm weights N(0, 0.05), like the conv weights",
          "batch-norm and layer-norm scales N(1, s), shifts 0 (s: the profile's init spread), the DCGAN "
          "convention (`gan/models.py`, `init_weights`)",
          "Scales near 1 start each normalization layer near the identity. " + _STUDY_CODE_NOTE,
          fields=("gan.norm_init",)),
    _Rule("GAN", "Real batches of the critic steps",
          "the study's WGAN loop takes one real batch per generator step and runs all critic steps on it",
          _fresh_batches_here,
          "The same compute with more varied batches (`GanSettings.epochs`, profiles.py); not measured against "
          "the study's way.",
          applies=_has_wgan),
    _Rule("GAN", "Gradient penalty and detached fakes",
          "the study's code draws one interpolation weight for the whole batch, takes one gradient norm over the "
          "whole batch, and does not detach the fake samples when training the critic",
          "one interpolation weight per sample (shape [B, 1, 1, 1]), one gradient norm per sample with eps inside "
          "the square root (Gulrajani et al. 2017); fakes made under `no_grad` and detached in the critic loss "
          "(`gan/losses.py`, `gan/step.py`)",
          "A deliberate fix of defects of the study's code (REFERENCE.md): the batch-wide penalty constrains "
          "something other than each sample's gradient norm, and undetached fakes send the critic's loss into the "
          "generator's graph.",
          applies=_has_wgan),
    _Rule("GAN", "DCGAN label smoothing",
          "the study's code: noisy two-sided targets, real U(0.7, 1.2), fake U(0, 0.3)",
          "one-sided and fixed: real target 0.9, fake target 0 (`DcganLoss.real_target`)",
          "`DcganLoss` states the aim, a discriminator that is not over-confident keeps giving useful gradients, and "
          "smooths only the real targets (one-sided smoothing, Salimans et al. 2016). " + _STUDY_CODE_NOTE,
          fields=("gan.dcgan_targets",)),
    _Rule("GAN", "DCGAN generator loss",
          "the study's code: feature matching only, the L1 distance per sample between the discriminator's last "
          "conv features of real and fake samples, divided by 100",
          "non-saturating BCE (maximize log D(G(z))) plus feature matching as the squared distance between the "
          "batch means of the last conv features, averaged over features, weight 1 (`DcganLoss`)",
          "The adversarial term keeps a direct signal from the discriminator when feature statistics already "
          "match. " + _STUDY_CODE_NOTE,
          fields=("gan.dcgan_generator_loss",)),
    _Rule("GAN", "Spectral norm in the WGAN-GP-SN critic",
          "the study's code: spectral norm on the critic's convolutions except the last one",
          "spectral norm on every convolution and on the final linear layer (`gan/models.py`, `Critic`)",
          "Every layer 1-Lipschitz makes the whole critic so, by construction (notebook 04's argument). "
          + _STUDY_CODE_NOTE,
          fields=("gan.sn_last_layer",)),
    _Rule("GAN", "Which generator makes the synthetic set",
          "selected checkpoints: DCGAN epoch 140 of 300, WGANs epoch 180 of 200 (criterion not stated)",
          lambda ps: _per_profile(ps, _which_generator),
          "The study does not say how it chose those epochs. A stated, repeatable criterion instead: the final "
          "generator, or (profiles with snapshots) the snapshot whose pairs train a small U-net best on the real "
          "validation patches (`gan/selection.py`); test data never enter the choice.",
          fields=("gan.snapshots",), applies=lambda p: True),
    _Rule("GAN", "Weight average of the generator (EMA)",
          "none: samples come from the generator's current weights",
          _setting("gan.ema_decay"),
          "Measured on the course profile (issue 20, closing note): see the row's number there. A running average "
          "of the weights sits in the middle of the generator's step-to-step wandering; its batch-norm statistics "
          "are recomputed before it generates (`gan/ema.py`).",
          fields=("gan.ema_decay",)),
    _Rule("GAN", "Differentiable augmentation of the critic's inputs",
          "none",
          lambda ps: _per_profile(ps, lambda p: _fmt(p.gan.diffaug)),
          "DiffAugment (Zhao et al. 2020) against a critic that memorizes a small training set; the same random "
          "flips, rotations, shifts and cutout on image and label, real and fake alike (`gan/augment.py`).",
          fields=("gan.diffaug",)),
    _Rule("GAN", "Generator upsampling and critic kernels",
          "kernel-5 transposed convolutions (stride 2) in the generator, kernel-5 strided convolutions in the critic",
          lambda ps: _per_profile(ps, lambda p: f"generator {p.gan.upsampling}, critic kernel {p.gan.critic_kernel}"),
          "Measured on the course profile (one seed, labels at the real vessel fraction; the numbers are recorded "
          "beside the setting in `profiles.py`): the U-net on WGAN-GP-SN pairs segmented better, and the samples "
          "lose the transposed convolutions' checkerboard. Not for speed: "
          "nearest3 convolves at the output size and costs more per step, the kernel-4 critic less "
          "(`benchmarks/bench_gan.py --changes` prints both).",
          fields=("gan.upsampling", "gan.critic_kernel")),
    _Rule("GAN", "Floor on the generator steps",
          "none: the schedule is epochs x N / batch generator steps",
          lambda ps: _per_profile(ps, lambda p: ", ".join(f"{n} at least {_fmt(v.min_steps)}"
                                                          for n, v in p.gan.variants.items())),
          "A budget counted in epochs shrinks with the data: on three real heads the course WGANs got a fraction "
          "of their tuned steps and drew no vessel label at all (issue 20). The floor keeps the steps the course "
          "profile was tuned with.",
          fields=_variant_fields("min_steps")),
    _Rule("GAN", "Label threshold of the synthetic pairs",
          "0.8 on the [0, 1] scale of the generated label channel",
          lambda ps: _per_profile(ps, lambda p: (
              f"{_fmt(p.gan.label_threshold)}" if p.gan.label_threshold_rule == "fixed" else
              "the threshold at which the synthetic vessel fraction equals the real training fraction "
              + ("" if len(p.gan.label_fraction_scales) == 1 and p.gan.label_fraction_scales[0] == 1.0 else
                 f"times a scale ({_fmt(p.gan.label_fraction_scales)}; with several, the one whose pairs train a small "
                 "U-net best on the real validation patches) ")
              + "(`gan/generate.py`, `matching_threshold`; `gan/selection.py`)")),
          "Measured on the course profile (issue 20; numbers in `profiles.py` beside the setting): at 0.8 the course "
          "GANs' labels mark about half the real vessel fraction and the synthetic-trained U-nets under-segment "
          "(they miss more vessel than they add); a larger label fraction raised the test DSC in the one seed "
          "tried. Every datasheet reports the thresholds and the fraction at each.",
          fields=("gan.label_threshold", "gan.label_threshold_rule", "gan.label_fraction_scales")),
    _Rule("GAN", "Generator mode when sampling",
          "the study's code generates without `.eval()`: batch norm normalizes with each generated batch's "
          "statistics",
          "eval mode: batch norm uses the running statistics of training (`generate_pairs`, the sample grids)",
          "In eval mode a pair depends only on its own noise vector, not on the other pairs of its generation batch "
          "(nor on the batch size). " + _STUDY_CODE_NOTE,
          fields=("gan.generate_mode",)),
    _Rule("GAN", "Scaling of the synthetic images",
          "each synthetic image rescaled per patch (to 0..255, `rescale_unet`) before the U-net: every patch, "
          "real or synthetic, is scaled the same way",
          "the generator's image channel clipped to [-1, 1], not rescaled per patch (`image_scaling = \"clip\"`)",
          "Kept only to measure what the per-patch rule is worth; every profile uses the study's rule.",
          fields=("gan.image_scaling",)),
)


# ---------------------------------------------------------------------------- U-net
def _unet_length(p: Profile) -> str:
    cap = f", at most {_fmt(p.unet.max_steps)} steps" if p.unet.max_steps is not None else ""
    return f"{p.unet.epochs} epoch{'' if p.unet.epochs == 1 else 's'}{cap}"


def _dropout_here(profiles: Profiles) -> str:
    rate = _per_profile(profiles, lambda p: _fmt(p.unet.dropout))
    return (f"dropout (p = {rate}) after the block, not between its convolutions, and only in the encoder blocks "
            "of the two deepest levels (the bottleneck included); none in the decoder (`unet/model.py`)")


_UNET: tuple[_Rule, ...] = (
    _Rule("U-net", "U-net width", "64 channels in the first level (the full U-net) or 32 (the half U-net)",
          _setting("unet.base_width"),
          "CPU time: the course U-net has a quarter of the study's full width. Measured (profiles.py): width 8 "
          "collapsed to all-background on the course data; width 12 was only 20 % faster than 16.",
          fields=("unet.base_width",)),
    _Rule("U-net", "U-net learning rate", "Adam lr 0.0001",
          lambda ps: _per_profile(ps, lambda p: f"Adam lr {_fmt(p.unet.lr)}"),
          "So that the few hundred steps of a CPU profile suffice. Measured (profiles.py, course): 0.001 sometimes "
          "collapsed to an all-background output within 100 steps, hence 0.0005 in course.",
          fields=("unet.lr",)),
    _Rule("U-net", "U-net training length", "about 10 epochs", lambda ps: _per_profile(ps, _unet_length),
          "CPU time.",
          fields=("unet.epochs", "unet.max_steps")),
    _Rule("U-net", "U-net weight initialization", "Glorot uniform (Keras' default)",
          lambda ps: _per_profile(ps, lambda p: {"he": "He normal", "glorot": "Glorot uniform",
                                                 "torch": "PyTorch's default"}.get(p.unet.weight_init,
                                                                                   p.unet.weight_init)),
          "Measured (`unet/model.py`, `benchmarks/bench_unet_init.py`, 6 seeds): with Glorot, negative soft Dice "
          "sits on the constant-prediction plateau for 40-80 Adam steps at lr 0.0005 on the course data, and a "
          "short budget can end there with an empty prediction; with He the plateau lasts about 10 steps.",
          fields=("unet.weight_init",)),
    _Rule("U-net", "Gradient clipping", "none (the study's Keras setup)",
          lambda ps: _per_profile(ps, lambda p: f"gradient norm clipped to {_fmt(p.unet.max_grad_norm)}"),
          "Measured (profiles.py): without it, 2 of 9 seeds of a course U-net on the DCGAN set swung all logits "
          "far negative within 20 steps and never predicted a vessel again (soft Dice through a saturated sigmoid "
          "gives no gradient); with 1.0, none of the 9 did. Not sufficient alone: with one torch thread the same "
          "seed collapsed at step 34 (clipping does not bound Adam's step); see the loss row.",
          fields=("unet.max_grad_norm",)),
    _Rule("U-net", "U-net training loss", "negative soft Dice (smooth 1) over the batch",
          lambda ps: _per_profile(ps, lambda p: "negative soft Dice plus the mean binary cross-entropy of the logits"
                                  if p.unet.loss == "dice_bce" else "negative soft Dice"),
          "Measured on the course profile (DCGAN synthetic set, seed 2021, one torch thread): with soft Dice alone "
          "every logit went far negative by step 34 and the U-net predicted no vessel for the rest of its 400 "
          "steps, even with gradient clipping; with the cross-entropy term added it reached validation Dice 0.63 "
          "in 120 steps, and seeds 0, 1 and 7 0.55-0.65: the term keeps a gradient p - t per pixel where the "
          "sigmoid is saturated.",
          switch="`UnetConfig.loss = \"dice\"`", fields=("unet.loss",)),
    _Rule("U-net", "Dropout placement",
          "between the two 3x3 convolutions of every block, encoder and decoder (Livne et al. 2019's code)",
          _dropout_here,
          "Not measured against the study's placement on the course profile; the CPU profiles keep the placement "
          "their budgets were tuned with. `paper` uses the study's.",
          fields=("unet.dropout_placement",)),
    _Rule("U-net", "Data augmentation",
          "rotation up to 30 degrees, vertical flip, shear up to 20 degrees; twice the samples per epoch",
          lambda ps: _per_profile(ps, lambda p: (
              "the study's rotation, flip and shear on every batch, but the same number of steps (no doubled epoch)"
              if p.unet.augment else "none: the U-net trains on the patches as they are")),
          "The step budget is the profile's either way (`unet/augment.py`). Measured on the course profile, one seed "
          "(numbers in `profiles.py` beside the setting): it lowers the real-data U-net's test DSC a little and "
          "raises the synthetic-data U-nets'; every U-net of a run gets it or none does.",
          fields=("unet.augment",), applies=lambda p: True),
    _Rule("U-net", "U-net input scaling",
          "raw (not per-patch min-max scaled) tiles, z-scored with the training mean and standard deviation",
          "every patch and inference tile min-max scaled to [-1, 1] on its own, then z-scored with the training "
          "set's mean and standard deviation (`conventions.py`)",
          "One scaling for everything the networks see (`conventions.py`): the GANs learn per-patch scaled patches "
          "(as in the study), so synthetic pairs exist only in that scale, and real patches and inference tiles "
          "must match them. The study's scaling is offered at inference (`scaling = \"volume\"`: one linear map for "
          "the volume, then the same z-score) and competes on the validation volumes in notebook 05."),
)


# ---------------------------------------------------------------------------- evaluation
def _inference_mode() -> Any:
    return _notebook_default(_NOTEBOOK_05, "eval_mode")


def _inference_here(profiles: Profiles) -> str:
    parts = []
    main = _inference_mode()
    scaling = _notebook_default(_NOTEBOOK_05, "eval_scaling")
    compared = (_notebook_default(_NOTEBOOK_05, "compare_mode"), _notebook_default(_NOTEBOOK_05, "compare_scaling"))
    beside = "; the study's inference beside it on the test volumes" if compared == ("tiles", "volume") else ""
    if main == "auto" or scaling == "auto":
        parts.append("notebook 05's main table: the tiling (`tiles`, `sliding`, whole `slice`) and the input scaling "
                     "(`per_tile`, `volume`) chosen on the validation volumes by the U-nets' mean DSC "
                     f"(`eval_mode = \"{main}\"`, `eval_scaling = \"{scaling}\"`){beside}")
    else:
        parts.append(f"notebook 05's main table: `eval_mode = \"{main}\"`, `eval_scaling = \"{scaling}\"`{beside}")
    transfer = _per_profile(profiles, lambda p: f"`{p.transfer.eval_mode}`")
    parts.append(f"transfer sweep: {transfer} with per-tile scaling")
    return ("; ".join(parts) + ". `sliding`: overlapping tiles (stride half a tile) blended with a Gaussian "
            "weight; `slice`: one fully convolutional pass per slice (`unet/infer.py`)")


_EVALUATION: tuple[_Rule, ...] = (
    _Rule("evaluation", "Whole-volume inference",
          "per axial slice, non-overlapping 96 px tiles over the brain's bounding box, raw tiles z-scored with the "
          "training statistics, threshold 0.5",
          _inference_here,
          "The inference is a setting of the experiment, so it is chosen like the others: on validation volumes, "
          "never on test volumes (`unet/inference_choice.py`). The same pass counts the false positives in the "
          "brain's outer rim for each candidate, and notebook 05 says from those counts whether per-tile scaling "
          "adds false positives at the brain's edge. The transfer sweep keeps one fixed inference so its many runs "
          "stay cheap.",
          switch="notebook 05: `eval_mode = \"tiles\"`, `eval_scaling = \"volume\"`; `transfer.eval_mode = \"tiles\"`; "
                 "`tofmra segment --mode tiles --scaling volume`",
          fields=("transfer.eval_mode",),
          applies=lambda p: True),  # notebook 05 chooses on validation volumes; the transfer sweep has its own
    _Rule("evaluation", "95th-percentile Hausdorff distance",
          "EvaluateSegmentation's HDRFDST@0.95: distances of mismatching voxels only, in voxel units, found by a "
          "randomized early-stopping search",
          "tables lead with the standard hd95 in mm (border voxels, Euclidean distances with the voxel spacing, "
          "medpy's definition: `hd95_mm`); the study's definition is computed exactly in voxels beside it "
          "(`hd95_study`), and the tool's search can be emulated (`hd_quantile_tool_emulation`)",
          "REFERENCE.md asks for the standard definition as default. The tool's early stop is random and biases "
          "its value upwards, so an exact computation (`hd95_study`) is a lower bound of what the tool reports "
          "for the same masks: the study's numbers are comparable only roughly.",
          switch="notebook 05's columns '95HD (voxels, tool emulation)' and '95HD (voxels, exact: lower bound of the tool's value)'; `tofmra evaluate --json` prints the exact one"),
)


# ---------------------------------------------------------------------------- transfer learning
def _budget(p: Profile) -> str:
    t = p.transfer
    cap = f", at most {t.max_steps}" if t.max_steps else ""
    ns = _positive(t.n_subjects)
    examples = ", ".join(f"n = {n}: {t.steps_for(n)}" for n in (ns[0], ns[-1])) if ns else ""
    return f"max({t.min_steps}, {t.steps_per_subject} n) steps{cap} ({examples})"


def _validation_here(profiles: Profiles) -> str:
    counts = _per_profile(profiles, lambda p: (f"{p.data.site_b_n_val} subject{'' if p.data.site_b_n_val == 1 else 's'}"
                                               f", {p.transfer.val_checks} checks per run"
                                               + (f", at most {p.transfer.val_patches_per_subject} patches per subject"
                                                  if p.transfer.val_patches_per_subject else "")))
    return ("the weights with the best Dice on the patches of site-B validation subjects (never test subjects) are "
            f"evaluated: {counts}")


def _budget_grows(p: Profile) -> bool:
    ns = _positive(p.transfer.n_subjects)
    return len(ns) > 1 and p.transfer.steps_for(ns[-1]) > p.transfer.steps_for(ns[0])


_TRANSFER: tuple[_Rule, ...] = (
    _Rule("transfer", "Numbers of site-B subjects n", "1 to 15 patients",
          lambda ps: _per_profile(ps, lambda p: _fmt(_positive(p.transfer.n_subjects))),
          "CPU time: every n costs a fine-tuning run per arm and seed.",
          fields=("transfer.n_subjects",)),
    _Rule("transfer", "n = 0", "not run (1 to 15 patients)",
          "the site-A U-nets of the pretrained arms applied to site B without fine-tuning",
          "An added reference point: how far the domain shift alone takes a site-A U-net (notebook 06).",
          switch="`transfer.n_subjects` without 0", applies=lambda p: 0 in p.transfer.n_subjects),
    _Rule("transfer", "Choice of the fine-tuned weights", "not reported",
          _validation_here,
          "The study does not say how its transfer runs were selected (profiles.py, `DataConfig.site_b_n_val`); "
          "this is our choice, and it never looks at a test subject.",
          switch="`data.site_b_n_val = 0` (then the final weights)", applies=lambda p: p.data.site_b_n_val > 0),
    _Rule("transfer", "Fine-tuning step budget", "not reported", lambda ps: _per_profile(ps, _budget),
          "The budget grows with the data, so more subjects are not starved of passes over their patches "
          "(`TransferConfig.steps_for`); every arm gets the same budget for the same n.",
          switch="`transfer.steps_per_subject = 0` (then `min_steps` for every n)", applies=_budget_grows),
    _Rule("transfer", "The `real` arm", "two initializations: from scratch and pretrained on synthetic data",
          "also the site-A U-net trained on real patches as a starting point",
          "An added upper reference: what sharing the real data would give (`transfer.py`).",
          switch="`transfer.arms`, notebook 06's `arms`", applies=lambda p: "real" in p.transfer.arms),
    _Rule("transfer", "Fine-tuning with a frozen encoder", "fine-tuning from the pretrained weights (no frozen "
          "layers described)",
          "pretrained arms also fine-tuned with the encoder frozen (`frozen_encoder`: only the decoder adapts)",
          "An added question (notebook 06's exercise 'Freeze or not?'): is the encoder learned at site A enough?",
          switch="`transfer.finetunes`, notebook 06's `finetunes`",
          applies=lambda p: "frozen_encoder" in p.transfer.finetunes),
)

# ---------------------------------------------------------------------------- the DP GAN (notebook 08)
_DP_STUDY = "the 2022 follow-up study (Kossen et al., Front AI 5:813842)"

_DP: tuple[_Rule, ...] = (
    _Rule("GAN", "DP GAN: privacy unit", f"{_DP_STUDY}: epsilon accounted per patch (1000 patches per patient)",
          lambda ps: _per_profile(ps, lambda p: f"per {p.dp.unit}" + (
              f", plus one run per patch at epsilon {_fmt(p.dp.patch_epsilon)}" if p.dp.patch_epsilon else "")),
          "A patient gives hundreds of patches, so a per-patch epsilon says little about a patient; patients are "
          "sampled and the sum of each patient's patch gradients is clipped (`gan/dp.py`). The per-patch run shows "
          "the patient-level epsilon of the study's accounting.",
          fields=("dp.unit",)),
    _Rule("GAN", "DP GAN: epsilons", f"{_DP_STUDY}: epsilon 7.4 (delta 1/41000) and no privacy",
          _setting("dp.target_epsilons"),
          "With a few training patients (CPU profiles), a patient-level epsilon near 7.4 leaves the critic nothing "
          "but noise; the sweep's private point sits where the accountant reports it for the profile's steps.",
          fields=("dp.target_epsilons",)),
    _Rule("GAN", "DP GAN: critic and its loss", f"{_DP_STUDY}: opacus 0.14 on a WGAN critic with weight clipping "
          "0.01 and RMSprop (the gradient penalty commented out: opacus cannot differentiate it twice)",
          "the WGAN-GP critic (layer norm, gradient penalty inside each clipped per-example loss) with Adam, "
          "per-example gradients by `torch.func` (`functional_call` + `vmap(grad)`), accounting by `dp-accounting`",
          "The gradient penalty is the project's WGAN; `torch.func` supports its double backward per example. "
          "Adam on privatized gradients is post-processing.",
          applies=lambda p: True),
)

#: The registry: every entry, in table order.
_RULES: tuple[_Rule, ...] = (*_DATA, *_GAN, *_DP, *_UNET, *_EVALUATION, *_TRANSFER)


