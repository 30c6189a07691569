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

__all__ = ["Source", "load_manifest", "default_manifest_dir", "fetch_source", "ALGORITHMS"]

#: Checksum algorithms the manifest may name.
ALGORITHMS: tuple[str, ...] = ("md5", "sha256")
KINDS: tuple[str, ...] = ("download", "builtin")
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
    verifies is returned without any network access.

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
