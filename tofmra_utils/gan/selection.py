"""Choose the GAN snapshot whose pairs teach a segmenter best, measured on real validation patches.

Losses do not say when a GAN is good: the study loaded a hand-picked epoch (140 of 300 for the
DCGAN, 180 of 200 for the WGANs). Here training keeps a few snapshots
(``GanConfig.snapshots``, :func:`~tofmra_utils.gan.train.snapshot_steps`) and each gets a cheap
*train-on-synthetic, test-on-real* score (:func:`tstr_score`): a small U-net trains for a short,
fixed budget on ``n_pairs`` pairs the snapshot generates, and its Dice on the **real validation**
patches is the score. Every snapshot gets the same U-net seed, batches and budget, so only the
pairs differ. Test data never enter the choice.

The score is a proxy: a small, briefly trained U-net ranks sets of pairs, not the final U-net's
test DSC. Notebooks 02-04 print the scores and the step chosen; ``datasheet.json`` keeps them.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..conventions import dice, normalization_stats
from ..patchset import PatchSet
from ..seeding import set_determinism
from ..unet.model import UNet
from ..unet.step import unet_step
from ..unet.train import _zscore, predict_patches
from .generate import generate_pairs, generated_label_channel, load_generator, matching_threshold
from .train import list_snapshots

__all__ = ["ProbeSettings", "tstr_score", "select_snapshot"]


@dataclass(frozen=True)
class ProbeSettings:
    """The small U-net that scores a snapshot (:func:`tstr_score`).

    Attributes
    ----------
    n_pairs
        Generated pairs it trains on.
    steps, batch_size, lr
        Adam steps, batch and learning rate.
    base_width, depth
        U-net size (no dropout).
    max_val_patches
        Real validation patches scored (a fixed, seeded subset when there are more).
    """

    n_pairs: int = 1000
    steps: int = 120
    batch_size: int = 32
    lr: float = 1e-3
    base_width: int = 8
    depth: int = 3
    max_val_patches: int = 800


def tstr_score(
    image: np.ndarray, label: np.ndarray, val: PatchSet, probe: ProbeSettings = ProbeSettings(), seed: int = 0,
    device: Any = None,
) -> float:
    """Dice on real validation patches of a small U-net trained briefly on ``(image, label)`` pairs.

    Parameters
    ----------
    image, label
        (N, P, P) training pairs: images in [-1, 1], labels 0/1.
    val
        Real validation patches.
    probe
        Size and budget of the scoring U-net.
    seed
        Seeds the U-net's initialization and batch order (use one seed for all candidates).

    Returns
    -------
    float in [0, 1]: Dice of all validation pixels at probability 0.5.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    set_determinism(seed)
    model = UNet(1, probe.base_width, probe.depth, dropout=0.0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=probe.lr)
    mean, std = normalization_stats(image)
    x = _zscore(image, mean, std)
    y = torch.from_numpy(np.asarray(label, np.float32)).unsqueeze(1)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(probe.steps):
        idx = torch.randint(0, len(x), (min(probe.batch_size, len(x)),), generator=order)
        unet_step(model, optimizer, x[idx].to(device), y[idx].to(device), max_grad_norm=1.0, loss="dice_bce")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(val), min(len(val), probe.max_val_patches), replace=False))
    prob = predict_patches(model, val.image[pick], mean, std, device=device)
    return float(dice(prob >= 0.5, val.label[pick] > 0))


def select_snapshot(
    checkpoint: str | os.PathLike[str], val: PatchSet, real_fraction: float | None = None,
    probe: ProbeSettings = ProbeSettings(), seed: int = 0, device: Any = None, fraction_scales: tuple[float, ...] = (1.0,),
) -> dict[str, Any]:
    """Score the snapshots of a GAN run, then the label fractions, with :func:`tstr_score`.

    Each snapshot generates ``probe.n_pairs`` pairs from the same noise, labels binarized by the
    run's rule (``label_threshold_rule``: the stored threshold, or the one matching
    ``real_fraction`` times the first of ``fraction_scales``) and images scaled as the run says;
    the best snapshot wins (ties: the later). With ``"match_real"`` and further scales, the
    chosen snapshot (or the final weights when the run kept no snapshots) is scored at each
    scale of the real fraction and the best scale wins (ties: the one nearest 1).
    ``real_fraction`` defaults to the one the checkpoint stored at training.

    Returns
    -------
    dict with ``snapshot`` (path of the best, or ``None``: the final weights), ``step`` (its
    generator step or ``None``), ``score``, ``scores`` (step -> score), ``label_fraction_scale``
    and ``scale_scores`` (scale -> score), ``probe`` (settings), ``measured_on`` (``"real
    validation patches"``) and ``seconds``.
    """
    started = time.perf_counter()
    snapshots = list_snapshots(Path(checkpoint).parent)
    scales = tuple(float(s) for s in fraction_scales)
    if not snapshots and len(scales) == 1:  # nothing to choose
        return {"snapshot": None, "step": None, "score": None, "scores": {}, "label_fraction_scale": scales[0],
                "scale_scores": {}, "probe": asdict(probe), "measured_on": "real validation patches", "seconds": 0.0}
    loaded: dict[Path | None, tuple[Any, dict[str, Any]]] = {}  # one checkpoint read per candidate

    def score(path: Path | None, scale: float) -> float:
        if path not in loaded:
            loaded[path] = load_generator(checkpoint, device=device, snapshot=path)
        generator, info = loaded[path]
        fraction = info["real_vessel_fraction"] if real_fraction is None else real_fraction
        threshold = info["label_threshold"]
        batch_statistics = info["generate_mode"] == "train"
        if info["label_threshold_rule"] == "match_real":
            channel = generated_label_channel(generator, probe.n_pairs, info["z_dim"], seed=seed + 1,
                                              batch_statistics=batch_statistics)
            threshold = matching_threshold(channel, fraction, scale)
        image, label = generate_pairs(generator, probe.n_pairs, info["z_dim"], seed=seed, threshold=threshold,
                                      image_scaling=info["image_scaling"], batch_statistics=batch_statistics)
        return round(tstr_score(image, label, val, probe, seed=seed, device=device), 4)

    scores = {step: score(path, scales[0]) for step, path in snapshots.items()} if snapshots else {}
    best = max(scores, key=lambda s: (scores[s], s)) if scores else None  # ties: the later snapshot
    best_path = snapshots[best] if best is not None else None
    # Then the label fraction, on the chosen snapshot (scales beyond the first only).
    scale_scores = {scales[0]: scores[best]} if best is not None else {}
    for scale in scales[1 if best is not None else 0:]:
        scale_scores[scale] = score(best_path, scale)
    best_scale = max(scale_scores, key=lambda s: (scale_scores[s], -abs(s - 1.0))) if scale_scores else scales[0]
    return {"snapshot": str(best_path) if best_path is not None else None, "step": best,
            "score": scale_scores.get(best_scale), "scores": {str(k): v for k, v in scores.items()},
            "label_fraction_scale": best_scale, "scale_scores": {str(k): v for k, v in scale_scores.items()},
            "probe": asdict(probe), "measured_on": "real validation patches",
            "seconds": round(time.perf_counter() - started, 1)}
