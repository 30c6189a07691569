"""Time the phantom: seconds per volume (made, and made + written as gzipped NIfTI) for each site.

Usage: ``python benchmarks/bench_phantom.py [--profile course] [--subjects 3] [--seed 0] [--out DIR]``
(``--profile all`` runs smoke, course and paper). Prints one row per (profile, site): voxels,
seconds to make a volume, seconds to make and write it, vessel fraction in the brain and the
vessel/tissue contrast ratio (means over the subjects), and the machine load before and after.
Not a test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tofmra_utils.phantom import PROTOCOLS, make_phantom, site_shape, subject_seed, write_phantom_dataset
from tofmra_utils.profiles import PROFILES, get_profile


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def bench(profile: str, n: int, seed: int, out: Path) -> list[dict[str, object]]:
    shape = get_profile(profile).data.volume_shape
    rows = []
    for site in PROTOCOLS:
        made, fractions, contrasts = [], [], []
        for i in range(n):
            t0 = time.perf_counter()
            ph = make_phantom(site, subject_seed(seed, site, i), shape)
            made.append(time.perf_counter() - t0)
            fractions.append(ph.stats["vessel_fraction"])
            contrasts.append(ph.stats["contrast_ratio"])
        folder = out / f"{profile}-{site}"
        t0 = time.perf_counter()
        write_phantom_dataset(folder, site, n, seed, shape, workers=1)
        written = (time.perf_counter() - t0) / n
        rows.append({
            "profile": profile,
            "site": site,
            "shape": "x".join(map(str, site_shape(site, shape))),
            "voxels": int(np.prod(site_shape(site, shape))),
            "s/volume (make)": round(float(np.mean(made)), 2),
            "s/volume (make+write)": round(written, 2),
            "vessel %": round(100 * float(np.mean(fractions)), 2),
            "contrast": round(float(np.mean(contrasts)), 2),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="course", choices=[*PROFILES, "all"])
    parser.add_argument("--subjects", type=int, default=3, help="volumes per site")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="where to write the volumes (default: a temporary folder)")
    a = parser.parse_args()
    profiles = list(PROFILES) if a.profile == "all" else [a.profile]
    print(_load())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        rows = [row for p in profiles for row in bench(p, a.subjects, a.seed, out)]
    header = list(rows[0])
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[k]) for k in header))
    print(_load())


if __name__ == "__main__":
    main()
