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
    )
    print(ds.describe())
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from .gan.generate import generate_from_checkpoint

    out = generate_from_checkpoint(a.checkpoint, n=a.n, out_dir=a.out, seed=a.seed, threshold=a.threshold)
    print(f"wrote {a.n} synthetic pairs to {out}")
    return 0


def _cmd_segment(a: argparse.Namespace) -> int:
    from .unet.infer import segment_file

    out = segment_file(
        a.model, a.image, a.out, mask_path=a.mask, mode=a.mode, overlap=a.overlap, threshold=a.threshold,
        batch_size=a.batch_size, save_probability=a.probability,
    )
    print(f"wrote {out}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .metrics import evaluate_files

    result = evaluate_files(a.pred, a.truth)
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
    r.set_defaults(func=_cmd_run)

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
    f.set_defaults(func=_cmd_fetch)

    pr = sub.add_parser("prepare", help="turn a folder of NIfTI volumes into the notebooks' patch data set")
    pr.add_argument("--images", required=True)
    pr.add_argument("--labels", default=None)
    pr.add_argument("--masks", default=None, help="brain masks (computed when not given)")
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
    s.add_argument("--mode", default="tiles", choices=["tiles", "sliding"])
    s.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap fraction")
    s.add_argument("--threshold", type=float, default=0.5)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--probability", action="store_true", help="write the probability map instead of the 0/1 mask")
    s.set_defaults(func=_cmd_segment)

    e = sub.add_parser("evaluate", help="DSC and 95HD of a predicted segmentation against the truth")
    e.add_argument("--pred", required=True)
    e.add_argument("--truth", required=True)
    e.add_argument("--json", action="store_true", help="print JSON with keys dsc, hd95_mm, hd95_study")
    e.set_defaults(func=_cmd_evaluate)


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
