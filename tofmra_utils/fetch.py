"""Download the real data sets listed in ``data_manifest/`` (``tofmra fetch NAME --dest DIR``).

This is the only network code of the project, and only this explicit command runs it; notebooks
and tests never touch the internet (the phantom needs no download).

A manifest source (one entry of ``data_manifest/*.yaml``, see ``data_manifest/README.md``) names
a file, its URL and its checksum. :func:`fetch_source`:

1. refuses sources it cannot verify: built-in sources (the phantom), sources without a direct
   download URL, and sources without a checksum (the message says what to do instead);
2. downloads with :mod:`urllib` into ``dest/<file>.partial``, resuming an earlier partial download
   with an HTTP ``Range`` request (a server that ignores the range gets a fresh download);
3. verifies the complete file's md5 or sha256 and renames it to ``dest/<file>`` atomically.

An interrupted transfer keeps the ``.partial`` file (run the command again to resume); a checksum
mismatch deletes it (its bytes are wrong somewhere, so resuming it would never verify) and no
final file appears.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conventions import file_hash
from .io import DataError

__all__ = ["Source", "load_manifest", "default_manifest_dir", "fetch_source", "fetch_file_list", "pair_ixi", "ALGORITHMS"]

#: Checksum algorithms the manifest may name.
ALGORITHMS: tuple[str, ...] = ("md5", "sha256")
KINDS: tuple[str, ...] = ("download", "builtin", "file-list")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One data source of the manifest (fields as in ``data_manifest/README.md``).

    Attributes
    ----------
    name
        Short name used on the command line (``tofmra fetch NAME``).
    kind
        ``"download"`` (fetchable) or ``"builtin"`` (made by the package, nothing to fetch).
    url
        Landing page (record, project page) for people.
    download_url
        Direct URL of the file, or ``None`` when none is known (then fetch refuses and explains).
    filename
        Name of the downloaded file in ``dest``.
    size_bytes, size_approximate
        Expected size; ``size_approximate`` says the number is rounded (then it is not checked).
    checksum
        ``{"algorithm": "md5" | "sha256", "value": hex}`` or ``None`` (then fetch refuses).
    """

    name: str
    title: str
    kind: str
    url: str | None
    download_url: str | None
    filename: str | None
    licence: str
    size_bytes: int | None
    size_approximate: bool
    checksum: dict[str, str] | None
    manifest_file: Path
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the manifest
def default_manifest_dir() -> Path:
    """The repository's ``data_manifest/`` (next to the package, else under the repository root)."""
    from .runs import repo_root

    for candidate in (Path(__file__).resolve().parents[1] / "data_manifest", repo_root() / "data_manifest"):
        if candidate.is_dir():
            return candidate
    raise DataError(Path(__file__).resolve().parents[1] / "data_manifest", "manifest folder not found (pass --manifest DIR)")


def _parse_source(entry: Any, file: Path) -> Source:
    if not isinstance(entry, dict) or not entry.get("name"):
        raise DataError(file, f"every source needs a mapping with a 'name', got {entry!r:.80}")
    name = str(entry["name"])
    kind = str(entry.get("kind", "download"))
    if kind not in KINDS:
        raise DataError(file, f"source {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    checksum = entry.get("checksum")
    if checksum is not None:
        if not isinstance(checksum, dict) or checksum.get("value") in (None, ""):
            checksum = None  # "checksum: {algorithm: md5, value: null}" means unknown
        else:
            algorithm = str(checksum.get("algorithm", "")).lower()
            if algorithm not in ALGORITHMS:
                raise DataError(file, f"source {name!r}: checksum algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
            checksum = {"algorithm": algorithm, "value": str(checksum["value"]).lower()}
    size = entry.get("size_bytes")
    known = {"name", "title", "kind", "url", "download_url", "filename", "licence", "size_bytes", "size_approximate", "checksum"}
    return Source(
        name=name,
        title=str(entry.get("title", name)),
        kind=kind,
        url=entry.get("url"),
        download_url=entry.get("download_url"),
        filename=entry.get("filename"),
        licence=str(entry.get("licence", "unknown")),
        size_bytes=None if size is None else int(size),
        size_approximate=bool(entry.get("size_approximate", True)),
        checksum=checksum,
        manifest_file=file,
        extra={k: v for k, v in entry.items() if k not in known},
    )


def load_manifest(manifest_dir: str | os.PathLike[str] | None = None) -> dict[str, Source]:
    """Read every ``*.yaml`` / ``*.yml`` of the manifest folder into name -> :class:`Source`.

    A file holds either ``sources: [ {...}, ... ]`` or a single source mapping.

    Raises
    ------
    DataError
        Missing folder, unreadable YAML, malformed entries, or two sources with one name.
    """
    import yaml

    folder = Path(manifest_dir) if manifest_dir is not None else default_manifest_dir()
    if not folder.is_dir():
        raise DataError(folder, "manifest folder not found")
    sources: dict[str, Source] = {}
    for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            doc = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            raise DataError(file, f"not valid YAML ({err})") from None
        entries = doc.get("sources", []) if isinstance(doc, dict) and "sources" in doc else [doc] if doc else []
        for entry in entries:
            source = _parse_source(entry, file)
            if source.name in sources:
                raise DataError(file, f"source {source.name!r} is also defined in {sources[source.name].manifest_file}")
            sources[source.name] = source
    if not sources:
        raise DataError(folder, "no sources in the manifest folder (*.yaml)")
    return sources


# ----------------------------------------------------------------------------- fetching
def _refuse_unverifiable(source: Source) -> None:
    """Raise unless ``source`` can be downloaded and verified."""
    where = source.manifest_file
    if source.kind == "builtin":
        raise DataError(where, f"source {source.name!r} is built into the package, nothing to download: "
                               f"{source.extra.get('how_to_get', 'see data_manifest/README.md')}")
    if not source.download_url or not source.filename:
        raise DataError(where, f"source {source.name!r} has no direct download URL in the manifest: open {source.url} "
                               "in a browser, download the file there and check it by hand (see data_manifest/README.md)")
    if source.checksum is None:
        raise DataError(where, f"source {source.name!r} has no checksum in the manifest, so a download could not be "
                               f"verified; fetch refuses. Download it from {source.url} yourself, or add "
                               "'checksum: {algorithm: sha256, value: ...}' once you have checked the record")
    if not source.download_url.startswith(("https://", "http://")):
        raise DataError(where, f"source {source.name!r}: only http(s) URLs can be fetched, got {source.download_url}")


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "tofmra-fetch/1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) checked above


def _download(url: str, partial: Path, timeout: float, progress: bool, expected_size: int | None) -> None:
    """Append the missing bytes of ``url`` to ``partial`` (resuming with a Range request)."""
    from tqdm.auto import tqdm

    offset = partial.stat().st_size if partial.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left past our offset: the partial file is complete
            return
        raise DataError(url, f"download failed: HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        raise DataError(url, f"download failed: {getattr(err, 'reason', err)}") from None
    with response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            offset = 0  # the server ignored the Range header and sends the whole file: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else expected_size
        received = 0
        with open(partial, "ab" if offset else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=partial.name, disable=not progress
        ) as bar:
            try:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise DataError(partial, f"download interrupted after {offset + received} bytes ({err}); "
                                         "run the same command again to resume") from None
    if length is not None and received < int(length):
        raise DataError(partial, f"download interrupted after {offset + received} of {offset + int(length)} bytes; "
                                 "run the same command again to resume")


def fetch_source(
    name: str,
    dest: str | os.PathLike[str],
    manifest_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the manifest source ``name`` into ``dest`` (resumable), verify it, return its path.

    Parameters
    ----------
    name
        A source name of the manifest (``tofmra fetch --help`` lists them via the error message).
    dest
        Folder for the file (created).
    manifest_dir
        Folder of manifest YAML files (default: the repository's ``data_manifest/``).
    progress
        Show a byte progress bar.
    timeout
        Seconds to wait for the server per network operation.

    Returns
    -------
    ``dest/<filename>``, verified against the manifest's checksum. A file already there that
    verifies is returned without any network access. A ``file-list`` source (many files, each
    with its own checksum, e.g. ``ixi-vessel-labels``) goes to ``dest/raw/`` through
    :func:`fetch_file_list`, and that folder is returned.

    Raises
    ------
    DataError
        Unknown name, unverifiable source (built in, no URL, no checksum), network failure or
        interruption (the ``.partial`` file is kept for a resume), checksum or size mismatch
        (the ``.partial`` file is deleted and no final file is written).
    """
    sources = load_manifest(manifest_dir)
    if name not in sources:
        folder = Path(manifest_dir) if manifest_dir is not None else default_manifest_dir()
        raise DataError(folder, f"unknown source {name!r}: the manifest lists {', '.join(sorted(sources))}")
    source = sources[name]
    if source.kind == "file-list":
        fetch_file_list(source, dest, progress=progress, timeout=timeout)
        return Path(dest) / RAW_FOLDER
    _refuse_unverifiable(source)
    assert source.filename is not None and source.download_url is not None and source.checksum is not None
    algorithm, expected = source.checksum["algorithm"], source.checksum["value"]

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / source.filename
    if final.exists():
        actual = file_hash(final, algorithm)
        if actual == expected:
            return final
        raise DataError(final, f"exists but its {algorithm} is {actual}, the manifest expects {expected}; "
                               "delete it and fetch again")

    partial = dest / f"{source.filename}.partial"
    _download(source.download_url, partial, timeout, progress,
              None if source.size_approximate else source.size_bytes)
    size = partial.stat().st_size
    if source.size_bytes is not None and not source.size_approximate and size != source.size_bytes:
        partial.unlink()
        raise DataError(final, f"downloaded {size} bytes, the manifest expects {source.size_bytes}; the partial "
                               "file was deleted, fetch again")
    actual = file_hash(partial, algorithm)
    if actual != expected:
        partial.unlink()
        raise DataError(final, f"checksum mismatch: {algorithm} of the download is {actual}, the manifest expects "
                               f"{expected}; the download was deleted (fetch again; if it repeats, the file on the "
                               "server changed: check the record)")
    os.replace(partial, final)
    return final


# ----------------------------------------------------------------------------- many files: a listed source
#: Where :func:`fetch_file_list` puts the downloaded files, under ``dest``.
RAW_FOLDER = "raw"


def _read_file_list(source: Source) -> list[tuple[str, int, str]]:
    """(path, bytes, sha256) rows of a ``file-list`` source's TSV (``file_list``, beside its manifest file)."""
    name = source.extra.get("file_list")
    if not name or "<path>" not in str(source.extra.get("url_pattern", "")):
        raise DataError(source.manifest_file, f"source {source.name!r}: a file-list source needs 'file_list' (a TSV) "
                                              "and 'url_pattern' (with <path>)")
    table = source.manifest_file.parent / str(name)
    if not table.exists():
        raise DataError(table, f"file list of source {source.name!r} not found")
    rows = []
    for number, line in enumerate(table.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#") or line.startswith("path\t"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[2]) != 64:
            raise DataError(table, f"line {number}: expected 'path<TAB>bytes<TAB>sha256', got {line!r:.80}")
        rows.append((parts[0], int(parts[1]), parts[2].lower()))
    if not rows:
        raise DataError(table, "no files listed")
    return rows


def fetch_file_list(
    source: Source, dest: str | os.PathLike[str], *, progress: bool = True, timeout: float = 60.0
) -> list[Path]:
    """Download every file of a ``file-list`` source into ``dest/raw/``, each checked by size and sha256.

    Resumable as :func:`fetch_source`: verified files are skipped without network access, an
    interrupted file keeps its ``.partial`` and the next call resumes it with a Range request;
    a file whose bytes do not verify is deleted and named in the error.

    Returns
    -------
    The verified files, in the list's order (file names: the listed paths' last part).
    """
    from tqdm.auto import tqdm

    rows = _read_file_list(source)
    pattern = str(source.extra["url_pattern"])
    if not pattern.startswith(("https://", "http://")):
        raise DataError(source.manifest_file, f"source {source.name!r}: only http(s) URLs can be fetched, got {pattern}")
    folder = Path(dest) / RAW_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    done = []
    for path, size, sha256 in tqdm(rows, desc=source.name, unit="file", disable=not progress):
        final = folder / Path(path).name
        if final.exists() and final.stat().st_size == size and file_hash(final, "sha256") == sha256:
            done.append(final)
            continue
        final.unlink(missing_ok=True)
        partial = folder / f"{final.name}.partial"
        _download(pattern.replace("<path>", path), partial, timeout, False, size)
        actual_size, actual = partial.stat().st_size, file_hash(partial, "sha256")
        if actual_size != size or actual != sha256:
            partial.unlink()
            raise DataError(final, f"checksum mismatch ({actual_size} bytes, sha256 {actual}; the list says {size} bytes, "
                                   f"{sha256}); the download was deleted, fetch again")
        os.replace(partial, final)
        done.append(final)
    return done


def _subject_id(name: str) -> str:
    """``IXI002`` of ``IXI002-Guys-0828-MRA.nii.gz`` (the IXI subject number: the pairing key)."""
    return name.split("-")[0]


def pair_ixi(labels: list[Path], ixi_tar: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Pair vessel labels with the IXI MRA tar's volumes by subject id into ``out/images`` + ``out/labels``.

    Labels are binarized (every vessel class 1-5 -> 1, background 0; the study segments vessel
    versus background) and written with the image's file-name stem, so ``tofmra prepare --images
    out/images`` pairs them. Only subjects with a label are extracted from the tar.

    Returns
    -------
    dict with ``paired`` (subject ids), ``labels_without_image`` and ``geometry_mismatch`` (ids
    whose label's shape or affine differ from the image's: written anyway, ``tofmra prepare``
    names them).

    Raises
    ------
    DataError
        The tar is missing or unreadable, or a label file is unreadable.
    """
    import tarfile

    import nibabel as nib
    import numpy as np

    from .io import atomic_path, save_volume

    out = Path(out)
    by_id = {_subject_id(p.name): p for p in labels}
    tar_path = Path(ixi_tar)
    if not tar_path.exists():
        raise DataError(tar_path, "IXI MRA tar not found (tofmra fetch ixi-mra --dest DIR downloads it)")
    paired, mismatch = [], []
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                name = Path(member.name).name
                sid = _subject_id(name)
                if not member.isfile() or not name.endswith((".nii.gz", ".nii")) or sid not in by_id:
                    continue
                stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]
                image_file = out / "images" / name
                source = tar.extractfile(member)
                assert source is not None
                with atomic_path(image_file) as tmp:
                    tmp.write_bytes(source.read())
                try:
                    label_img = nib.load(str(by_id[sid]))
                    label = (np.asarray(label_img.dataobj) > 0).astype(np.uint8)
                except Exception as err:  # nibabel raises many types for broken files
                    raise DataError(by_id[sid], f"unreadable label ({type(err).__name__}: {err})") from None
                image_img = nib.load(str(image_file))
                if label.shape != image_img.shape[:3] or not np.allclose(label_img.affine, image_img.affine, atol=1e-3):
                    mismatch.append(sid)
                save_volume(out / "labels" / f"{stem}.nii.gz", label, label_img.affine)
                paired.append(sid)
    except (tarfile.TarError, OSError) as err:
        raise DataError(tar_path, f"unreadable tar ({err})") from None
    return {"paired": sorted(paired), "labels_without_image": sorted(set(by_id) - set(paired)),
            "geometry_mismatch": sorted(mismatch)}
