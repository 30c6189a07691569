"""The ``tofmra`` command: one sub-command per pipeline step.

Each sub-command is a thin shell around one package function (imported lazily, so
``tofmra --help`` is instant). Bad input exits with status 2 and a one-line message naming the
file and the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .io import DataError
from .profiles import PROFILES, UnknownProfileError

__all__ = ["main", "build_parser"]


def _cmd_run(a: argparse.Namespace) -> int:
    """Exit 0 when every notebook ran, 1 when one failed, 2 on bad input or a run folder in use."""
    from .pipeline import PipelineError, RunLockedError, parse_parameters, run_pipeline

    if a.dry_run:
        return _dry_run(a)
    try:
        params = parse_parameters(a.param or [])
        summary = run_pipeline(
            profile=a.profile,
            out=a.out,
            only=a.only,
            data_dir=a.data,
            site_b_dir=a.data_b,
            parameters=params,
            book=a.book,
            threads=a.threads,
            seed=a.seed,
        )
    except (PipelineError, RunLockedError) as err:  # raised before any notebook runs: bad input, or the folder is locked
        print(f"tofmra run: {err}", file=sys.stderr)
        return 2
    return 0 if summary["status"] == "ok" else 1


def _dry_run(a: argparse.Namespace) -> int:
    """``tofmra run --dry-run``: a few steps of every stage at the profile's shapes; the projection."""
    import time

    import torch

    from .dryrun import dry_run, format_projection
    from .profiles import get_profile
    from .seeding import default_device

    if a.threads:
        torch.set_num_threads(a.threads)
    profile, device = get_profile(a.profile), default_device()
    print(f"tofmra run --dry-run: profile {profile.name}, a few steps per stage on {device.type} ...", flush=True)
    started = time.perf_counter()
    rows = dry_run(profile, device=device)
    print(format_projection(rows, profile, device, time.perf_counter() - started))
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated whole numbers, got {text!r}")
    return seeds


def _name_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _cmd_sweep(a: argparse.Namespace) -> int:
    """Exit 0 when every unit is done, 1 when one failed or is blocked, 2 on bad input."""
    from .profiles import get_profile
    from .runs import default_run_dir
    from .sweep import run_sweep, status_text

    run_dir = Path(a.run) if a.run else default_run_dir(a.profile)
    out = Path(a.out) if a.out else run_dir / "sweep"
    if a.status:
        print(status_text(out))
        return 0
    if a.seeds is None:
        print("tofmra sweep: error: --seeds is required (e.g. --seeds 0,1,2)", file=sys.stderr)
        return 2
    try:
        report = run_sweep(get_profile(a.profile), a.seeds, stages=a.stages, executor=a.executor, out=out,
                           run_dir=run_dir, slurm_partition=a.slurm_partition, parallel=a.parallel, gans=a.gans,
                           unets=a.unets, arms=a.arms, n_subjects=None if a.n_subjects is None else [int(n) for n in a.n_subjects])
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        print(f"tofmra sweep: error: {err}", file=sys.stderr)
        return 2
    for key, log in report.logs.items():
        print(f"tofmra sweep: {key} failed; log: {log}", file=sys.stderr)
    return 0 if report.ok else 1


def _cmd_book(a: argparse.Namespace) -> int:
    from .book import build_book
    from .runs import default_run_dir

    run_dir = Path(a.run_dir) if a.run_dir else default_run_dir(a.profile)
    html = build_book(run_dir)
    print(f"book: {html}")
    return 0


def _cmd_phantom(a: argparse.Namespace) -> int:
    from .phantom import write_phantom_dataset
    from .profiles import get_profile

    shape = tuple(a.shape) if a.shape else get_profile(a.profile).data.volume_shape
    paths = write_phantom_dataset(a.out, site=a.site, n_subjects=a.subjects, seed=a.seed, volume_shape=shape)
    print(f"wrote {len(paths)} phantom subjects of site {a.site} to {a.out}")
    return 0


def _cmd_fetch(a: argparse.Namespace) -> int:
    from .fetch import fetch_source

    path = fetch_source(a.name, a.dest, manifest_dir=a.manifest)
    print(f"fetched {a.name}: {path}")
    if a.ixi_tar:
        from .fetch import pair_ixi

        found = pair_ixi(sorted(path.glob("*.nii.gz")), a.ixi_tar, a.dest)
        print(f"paired {len(found['paired'])} subjects into {Path(a.dest) / 'images'} + {Path(a.dest) / 'labels'} "
              f"(labels binarized: classes 1-5 -> 1); {len(found['labels_without_image'])} labels without an image in the tar"
              + (f"; label geometry differs from the image for {', '.join(found['geometry_mismatch'])}" if found["geometry_mismatch"] else ""))
    return 0


def _cmd_prepare(a: argparse.Namespace) -> int:
    from .data import prepare_dataset
    from .profiles import get_profile

    ds = prepare_dataset(
        images_dir=a.images,
        labels_dir=a.labels,
        masks_dir=a.masks,
        out_dir=a.out,
        profile=get_profile(a.profile),
        site=a.site,
        seed=a.seed,
        force=a.force,
        brain_mask=a.brain_mask,
    )
    print(ds.describe())
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from .gan.generate import generate_from_checkpoint

    out = generate_from_checkpoint(a.checkpoint, n=a.n, out_dir=a.out, seed=a.seed, threshold=a.threshold)
    print(f"wrote {a.n} synthetic pairs to {out}")
    return 0


def _cmd_segment(a: argparse.Namespace) -> int:
    from .unet.infer import check_inference, segment_file

    try:
        check_inference(a.mode, a.scaling)
    except ValueError as err:
        print(f"tofmra segment: {err}", file=sys.stderr)
        return 2
    out = segment_file(
        a.model, a.image, a.out, mask_path=a.mask, mode=a.mode, overlap=a.overlap, threshold=a.threshold,
        batch_size=a.batch_size, save_probability=a.probability, brain_mask=a.brain_mask, reorient=not a.keep_orientation,
        scaling=a.scaling,
    )
    print(f"wrote {out}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .metrics import evaluate_files, evaluate_files_in_mask

    result = evaluate_files(a.pred, a.truth) if a.mask is None else evaluate_files_in_mask(a.pred, a.truth, a.mask)
    if a.mask is not None and not a.json:
        print(f"inside the brain mask {a.mask}: {result['mask_voxels']} voxels; {result['truth_voxels_outside']} "
              f"labelled vessel voxels outside it are not counted ({result['truth_voxels_inside']} inside)")
    if a.json:
        # Strict JSON has no NaN: an undefined distance (one mask empty) prints as null.
        print(json.dumps({k: None if isinstance(v, float) and v != v else v for k, v in result.items()}))
    else:
        for key, value in result.items():
            print(f"{key:10s} {value:.6g}" if isinstance(value, float) else f"{key:10s} {value}")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from .report import comparison_markdown, load_summary, results_markdown, update_readme

    if a.seeds:
        from .report import seed_spread_markdown

        runs = [a.run, *a.seeds]
        try:
            print(seed_spread_markdown([load_summary(r) for r in runs], labels=[str(r) for r in runs]))
        except ValueError as err:
            print(f"tofmra report: {err}", file=sys.stderr)
            return 2
        return 0
    summary = load_summary(a.run)
    if a.compare:
        print(comparison_markdown(summary, load_summary(a.compare), labels=(str(a.run), str(a.compare))))
        return 0
    table = results_markdown(summary)
    if a.readme:
        update_readme(a.readme, table)
        print(f"tofmra report: results table of {a.run} written into {a.readme}")
    else:
        print(table)
    return 0


def _cmd_clean(a: argparse.Namespace) -> int:
    from .cleanup import clean_run, human_bytes

    freed, left = clean_run(a.run, keep=tuple(a.keep or ()), dry_run=a.dry_run)
    verb = "would free" if a.dry_run else "freed"
    print(f"tofmra clean: {verb} {human_bytes(freed)} in {a.run}; {human_bytes(left)} left "
          "(results, figures, executed notebooks, book, logs)")
    return 0


def _cmd_course_kit(a: argparse.Namespace) -> int:
    from .coursekit import write_course_kit

    made = write_course_kit(a.out, a.source)
    n = sum(len(v) for v in made.values())
    print(f"tofmra course-kit: {len(made)} notebooks, {n} exercises -> {Path(a.out) / 'student'}, "
          f"{Path(a.out) / 'instructor'}")
    return 0


def _cmd_audit(a: argparse.Namespace) -> int:
    """Exit 0 with the audit printed; 2 on bad input (a missing file, sizes that differ, an empty set, NaN)."""
    from .patchset import PatchSet
    from .privacy import audit_synthetic, check_audit_inputs

    sets = {role: (PatchSet.load(path), path) for role, path in
            (("synthetic", a.synthetic), ("train", a.train), ("holdout", a.holdout))}
    check_audit_inputs(sets)
    if a.features == "unet" and not a.unet:
        raise DataError(None, "--features unet needs --unet CHECKPOINT (the real-trained U-net, unets/real/best.pt)")
    result = audit_synthetic(sets["synthetic"][0], sets["train"][0], sets["holdout"][0], features=a.features,
                             unet=a.unet, critic=a.critic, seed=a.seed, max_per_set=a.max_per_set)
    if a.json:
        print(json.dumps({k: None if isinstance(v, float) and v != v else v for k, v in result.as_dict().items()}))
    else:
        for key, value in result.details().items():
            if not isinstance(value, dict):
                print(f"{key:26s} {value:.4g}" if isinstance(value, float) else f"{key:26s} {value}")
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    """Exit 0 when exported, 1 when the audit flags copies (without --force), 2 on bad input."""
    from .export import ExportRefused, export_synthetic

    try:
        out = export_synthetic(a.run, a.gan, a.out, fmt=a.format, force=a.force, licence=a.licence)
    except ExportRefused as err:
        print(f"tofmra export: refused: {err}", file=sys.stderr)
        return 1
    print(f"tofmra export: {a.gan} synthetic set of {a.run} -> {out}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``tofmra`` argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="tofmra", description="Synthetic, labeled TOF-MRA patches: the study's pipeline.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_pipeline_commands(sub)
    _add_data_commands(sub)
    _add_model_commands(sub)
    return p


def _add_pipeline_commands(sub: Any) -> None:
    """``run``, ``report``, ``book``: the study as a whole."""
    profiles = sorted(PROFILES)
    r = sub.add_parser("run", help="run the numbered notebooks with papermill")
    r.add_argument("--profile", default="course", choices=profiles)
    r.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,05")
    r.add_argument("--out", default=None, help="run folder (default runs/<profile>)")
    r.add_argument("--data", default=None, help="folder of real site-A NIfTI volumes (images/, labels/[, masks/])")
    r.add_argument("--data-b", default=None, help="folder of real site-B volumes for transfer learning")
    r.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="extra notebook parameter (repeatable)")
    r.add_argument("--book", action="store_true", help="build the Jupyter Book afterwards")
    r.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads torch uses in every notebook (default: torch's choice, one per core)")
    r.add_argument("--seed", type=int, default=None,
                   help="training seed of the GANs and U-nets (default: the profile's); the data stay the same")
    r.add_argument("--dry-run", action="store_true",
                   help="run no notebook: a few steps of every stage at the profile's shapes on this device, then "
                        "each stage's step time, peak memory and projected wall time")
    r.set_defaults(func=_cmd_run)

    sw = sub.add_parser("sweep", help="GAN, U-net and transfer trainings for several seeds as jobs (submitit)")
    sw.add_argument("--profile", default="course", choices=profiles)
    sw.add_argument("--seeds", type=_seed_list, default=None, help="training seeds, e.g. 0,1,2")
    sw.add_argument("--stages", type=_name_list, default=["gans", "unets", "transfer"],
                    help="comma-separated subset of gans,unets,transfer (default all)")
    sw.add_argument("--executor", default="local", choices=["local", "slurm", "debug"],
                    help="local processes (default), SLURM job arrays, or this process (debug)")
    sw.add_argument("--run", default=None, help="run folder holding the prepared data (default runs/<profile>; "
                                                 "prepared there as notebook 01 does when missing)")
    sw.add_argument("--out", default=None, help="sweep folder (default <run>/sweep)")
    sw.add_argument("--slurm-partition", default=None, help="SLURM partition of the jobs")
    sw.add_argument("--parallel", type=_positive_int, default=None,
                    help="local jobs side by side (default: CPU cores / the stage's cpus); SLURM array tasks at once")
    sw.add_argument("--gans", type=_name_list, default=None, help="GANs to train (default all three)")
    sw.add_argument("--unets", type=_name_list, default=None, help="U-net training sets (default real and the GANs)")
    sw.add_argument("--arms", type=_name_list, default=None, help="transfer arms (default the profile's)")
    sw.add_argument("--n-subjects", type=_name_list, default=None, help="transfer site-B subject counts (default the profile's)")
    sw.add_argument("--status", action="store_true", help="only show what is queued, running, done and failed")
    sw.set_defaults(func=_cmd_sweep)

    rp = sub.add_parser("report", help="headline results of a run (markdown), or two runs side by side")
    rp.add_argument("--run", required=True, help="run folder holding summary.json")
    rp.add_argument("--compare", default=None, help="a second run folder: both runs side by side, with spreads")
    rp.add_argument("--readme", default=None, help="write the table into this file's results block instead")
    rp.add_argument("--seeds", nargs="+", default=None, metavar="RUN",
                    help="further runs of the same profile made with `tofmra run --seed`: notebook 05's DSCs "
                         "per seed, mean ± sd over seeds, and which GAN order the seeds support")
    rp.set_defaults(func=_cmd_report)

    c = sub.add_parser("clean", help="remove a run folder's checkpoints and data, keep results, figures and notebooks")
    c.add_argument("--run", required=True, help="run folder holding summary.json")
    c.add_argument("--keep", nargs="+", choices=("checkpoints", "data"), default=None,
                   help="kinds of file to keep as well (checkpoints: *.pt; data: *.npz, *.nii.gz)")
    c.add_argument("--dry-run", action="store_true", help="only say what would be freed")
    c.set_defaults(func=_cmd_clean)

    b = sub.add_parser("book", help="build the Jupyter Book from a run's executed notebooks")
    b.add_argument("--profile", default="course", choices=profiles)
    b.add_argument("--run-dir", default=None, help="run folder (default runs/<profile>)")
    b.set_defaults(func=_cmd_book)

    k = sub.add_parser("course-kit", help="student copies (solutions stubbed, outputs cleared) and instructor copies")
    k.add_argument("--out", required=True, help="kit folder: student/, instructor/ (with SOLUTIONS.md), README.md")
    k.add_argument("--source", default=None, help="folder of the numbered notebooks (default: the repository's notebooks/)")
    k.set_defaults(func=_cmd_course_kit)


def _add_data_commands(sub: Any) -> None:
    """``phantom``, ``fetch``, ``prepare``: volumes in, patch data sets out."""
    profiles = sorted(PROFILES)
    ph = sub.add_parser("phantom", help="write synthetic TOF-MRA volumes with exact vessel labels")
    ph.add_argument("--site", default="A", choices=["A", "B"])
    ph.add_argument("--subjects", type=int, required=True)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--out", required=True)
    ph.add_argument("--profile", default="course", choices=profiles, help="volume size comes from this profile")
    ph.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"), help="override the volume shape")
    ph.set_defaults(func=_cmd_phantom)

    f = sub.add_parser("fetch", help="download a real data set listed in data_manifest/ (checksummed, resumable)")
    f.add_argument("name")
    f.add_argument("--dest", required=True)
    f.add_argument("--manifest", default=None, help="manifest folder (default: the repository's data_manifest/)")
    f.add_argument("--ixi-tar", default=None, help="with ixi-vessel-labels: the IXI-MRA.tar to pair the labels with "
                                                   "(by subject id, into DEST/images + DEST/labels)")
    f.set_defaults(func=_cmd_fetch)

    pr = sub.add_parser("prepare", help="turn a folder of NIfTI volumes into the notebooks' patch data set")
    pr.add_argument("--images", required=True)
    pr.add_argument("--labels", default=None)
    pr.add_argument("--masks", default=None, help="folder of brain masks, same file names as the images (given masks always win)")
    pr.add_argument("--brain-mask", default="auto", choices=["auto", "tof", "threshold", "none"],
                    help="how masks are computed without --masks: auto (TOF method for whole heads, threshold for "
                         "skull-stripped volumes), tof, threshold, none (whole volume); recorded in dataset.json")
    pr.add_argument("--out", required=True)
    pr.add_argument("--profile", default="course", help="one of " + ", ".join(profiles))
    pr.add_argument("--site", default="A", choices=["A", "B"])
    pr.add_argument("--seed", type=int, default=None)
    pr.add_argument("--force", action="store_true", help="rebuild even if a matching cache exists")
    pr.set_defaults(func=_cmd_prepare)


def _add_model_commands(sub: Any) -> None:
    """``generate``, ``segment``, ``evaluate``: trained models applied to files."""
    g = sub.add_parser("generate", help="write N synthetic image/label pairs from a GAN checkpoint")
    g.add_argument("--checkpoint", required=True)
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threshold", type=float, default=None, help="label threshold in [0, 1] (default: the study's 0.8)")
    g.set_defaults(func=_cmd_generate)

    s = sub.add_parser("segment", help="segment vessels in a whole NIfTI volume with a trained U-net")
    s.add_argument("--model", required=True)
    s.add_argument("--image", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--mask", default=None, help="brain mask (computed when not given)")
    s.add_argument("--mode", default="tiles", choices=["tiles", "sliding", "slice"],
                   help="tiles (the study), sliding (overlapping, blended) or slice (whole slices; needs --scaling volume)")
    s.add_argument("--scaling", default="per_tile", choices=["per_tile", "volume"],
                   help="input scaling: each tile min-max scaled (default) or one map for the volume (the study's)")
    s.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap fraction")
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--probability", action="store_true", help="write the probability map instead of the 0/1 mask")
    s.add_argument("--brain-mask", default="auto", choices=["auto", "tof", "threshold", "none"],
                   help="how the mask is computed without --mask (auto: TOF method for whole heads)")
    s.add_argument("--keep-orientation", action="store_true",
                   help="predict in the file's own voxel order (default: the canonical axial RAS order, written back)")
    s.set_defaults(func=_cmd_segment)

    e = sub.add_parser("evaluate", help="DSC and 95HD of a predicted segmentation against the truth")
    e.add_argument("--pred", required=True)
    e.add_argument("--truth", required=True)
    e.add_argument("--json", action="store_true", help="print JSON with keys dsc, hd95_mm, hd95_study")
    e.add_argument("--mask", default=None, help="brain mask: evaluate inside it only (as the study's brain-masked data)")
    e.set_defaults(func=_cmd_evaluate)

    au = sub.add_parser("audit", help="privacy audit of a synthetic patch set: copies, membership inference, fidelity")
    au.add_argument("--synthetic", required=True, help="synthetic patch set (.npz, patch-set format)")
    au.add_argument("--train", required=True, help="the real training patches the generator learnt from (members)")
    au.add_argument("--holdout", required=True, help="real patches of subjects the generator never saw (non-members)")
    au.add_argument("--features", default="pixels", choices=["pixels", "unet", "random"], help="feature space")
    au.add_argument("--unet", default=None, help="real-trained U-net checkpoint (needed by --features unet)")
    au.add_argument("--critic", default=None, help="the GAN's checkpoint.pt: adds the white-box attack with its critic")
    au.add_argument("--max-per-set", type=_positive_int, default=2000,
                    help="at most this many synthetic and held-out patches are audited (default 2000)")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--json", action="store_true",
                    help="print one JSON object: copy_rate, nn_ratio, mia_auc, mia_auc_control, fd, kd, precision, "
                         "recall, density, coverage, n_synthetic, n_train, n_holdout, features")
    au.set_defaults(func=_cmd_audit)

    ex = sub.add_parser("export", help="write a GAN's synthetic set as a shareable folder with its datasheet")
    ex.add_argument("--run", required=True, help="run folder (synthetic/<gan>/ with an audited datasheet.json)")
    ex.add_argument("--gan", required=True, help="synthetic set synthetic/<gan>/: dcgan, wgan_gp, wgan_gp_sn or another")
    ex.add_argument("--out", required=True, help="new export folder")
    ex.add_argument("--format", default="npz", choices=["npz", "nifti"], help="file format of the pairs")
    ex.add_argument("--force", action="store_true", help="export even if the audit flags copies (recorded in the datasheet)")
    ex.add_argument("--licence", default="not set: the data holder chooses a licence (tofmra export --licence) before sharing",
                    help="licence text written into the datasheet")
    ex.set_defaults(func=_cmd_export)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tofmra`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataError, UnknownProfileError, FileNotFoundError) as err:
        print(f"tofmra {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tofmra {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
