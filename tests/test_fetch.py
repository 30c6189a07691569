"""``tofmra fetch``: download, resume, verification, refusals. A local HTTP server only, never the internet."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import yaml

from tofmra_utils.cli import main
from tofmra_utils.conventions import file_hash
from tofmra_utils.fetch import _read_file_list, fetch_source, load_manifest
from tofmra_utils.io import DataError

PAYLOAD = bytes(range(256)) * 400 + b"tail"  # 102 404 bytes


class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) for the lifetime of a ``with`` block."""

    def _serve(self, handler: type) -> str:
        """Bind ``handler``; returns the server's base URL."""
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(_LocalServer):
    """A threaded HTTP server on 127.0.0.1 serving PAYLOAD with Range support; logs each request."""

    def __init__(self, honour_range: bool = True, cut_after: int | None = None) -> None:
        self.requests: list[dict[str, str | None]] = []
        self.bytes_sent = 0
        self.honour_range = honour_range
        self.cut_after = cut_after  # send this many bytes, then drop the connection (once)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                    self.close_connection = True
                self.wfile.write(body)
                server.bytes_sent += len(body)

        self.url = self._serve(Handler) + "/data/payload.bin"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """A proxy from the environment must not see the local test server."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _manifest(folder: Path, url: str, algorithm: str = "md5", value: str | None = None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if value is None:
        value = hashlib.new(algorithm, PAYLOAD).hexdigest()
    entry = {
        "name": "toy",
        "title": "a toy file",
        "kind": "download",
        "url": "http://example.invalid/record",
        "download_url": url,
        "filename": "payload.bin",
        "licence": "CC0",
        "size_bytes": len(PAYLOAD),
        "size_approximate": False,
        "checksum": {"algorithm": algorithm, "value": value},
        **extra,
    }
    builtin = {"name": "builtin-thing", "kind": "builtin", "how_to_get": "run `tofmra phantom`"}
    (folder / "sources.yaml").write_text(yaml.safe_dump({"sources": [entry, builtin]}))
    return folder


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_full_download_verified(tmp_path, algorithm):
    with _Server() as srv:
        manifest = _manifest(tmp_path / "m", srv.url, algorithm)
        path = fetch_source("toy", tmp_path / "dest", manifest_dir=manifest, progress=False)
    assert path == tmp_path / "dest" / "payload.bin" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "dest" / "payload.bin.partial").exists()
    assert srv.requests == [{"path": "/data/payload.bin", "range": None}]
    assert file_hash(path, algorithm) == hashlib.new(algorithm, PAYLOAD).hexdigest()


def test_resume_from_partial_file(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    done = 40_000
    (dest / "payload.bin.partial").write_bytes(PAYLOAD[:done])
    with _Server() as srv:
        path = fetch_source("toy", dest, manifest_dir=_manifest(tmp_path / "m", srv.url), progress=False)
    assert srv.requests[0]["range"] == f"bytes={done}-"
    assert srv.bytes_sent == len(PAYLOAD) - done, "only the missing bytes travel"
    assert path.read_bytes() == PAYLOAD


def test_interrupted_download_keeps_partial_then_resumes(tmp_path):
    dest = tmp_path / "dest"
    with _Server(cut_after=30_000) as srv:
        manifest = _manifest(tmp_path / "m", srv.url)
        with pytest.raises(DataError, match="interrupted") as info:
            fetch_source("toy", dest, manifest_dir=manifest, progress=False)
        assert "resume" in str(info.value)
        assert (dest / "payload.bin.partial").stat().st_size == 30_000 and not (dest / "payload.bin").exists()
        path = fetch_source("toy", dest, manifest_dir=manifest, progress=False)
    assert srv.requests[-1]["range"] == "bytes=30000-"
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "payload.bin.partial").write_bytes(b"x" * 5000)  # would corrupt the file if appended to
    with _Server(honour_range=False) as srv:
        path = fetch_source("toy", dest, manifest_dir=_manifest(tmp_path / "m", srv.url), progress=False)
    assert srv.requests[0]["range"] == "bytes=5000-"
    assert path.read_bytes() == PAYLOAD


def test_complete_partial_gets_416_and_is_verified(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "payload.bin.partial").write_bytes(PAYLOAD)
    with _Server() as srv:
        path = fetch_source("toy", dest, manifest_dir=_manifest(tmp_path / "m", srv.url), progress=False)
    assert srv.bytes_sent == 0 and path.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_no_file(tmp_path):
    dest = tmp_path / "dest"
    with _Server() as srv:
        manifest = _manifest(tmp_path / "m", srv.url, value="0" * 32)
        with pytest.raises(DataError) as info:
            fetch_source("toy", dest, manifest_dir=manifest, progress=False)
    message = str(info.value)
    assert "payload.bin" in message and "checksum mismatch" in message and "0" * 32 in message
    assert not (dest / "payload.bin").exists() and not (dest / "payload.bin.partial").exists()


def test_exact_size_mismatch_is_an_error(tmp_path):
    with _Server() as srv:
        manifest = _manifest(tmp_path / "m", srv.url, size_bytes=len(PAYLOAD) + 1)
        with pytest.raises(DataError, match="manifest expects"):
            fetch_source("toy", tmp_path / "dest", manifest_dir=manifest, progress=False)
    assert not list((tmp_path / "dest").iterdir())


def test_existing_verified_file_needs_no_network(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "payload.bin").write_bytes(PAYLOAD)
    with _Server() as srv:
        assert fetch_source("toy", dest, manifest_dir=_manifest(tmp_path / "m", srv.url), progress=False).exists()
    assert srv.requests == []
    (dest / "payload.bin").write_bytes(b"other")
    with pytest.raises(DataError, match="delete it"):
        fetch_source("toy", dest, manifest_dir=tmp_path / "m", progress=False)


def test_unknown_source_names_the_choices(tmp_path):
    manifest = _manifest(tmp_path / "m", "http://127.0.0.1:9/never")
    with pytest.raises(DataError, match="unknown source 'nope'") as info:
        fetch_source("nope", tmp_path / "dest", manifest_dir=manifest)
    assert "toy" in str(info.value) and "builtin-thing" in str(info.value)


def test_refuses_unverifiable_and_builtin_sources(tmp_path):
    with _Server() as srv:
        manifest = _manifest(tmp_path / "m", srv.url, checksum=None)
        with pytest.raises(DataError, match="no checksum"):
            fetch_source("toy", tmp_path / "dest", manifest_dir=manifest)
        manifest = _manifest(tmp_path / "m2", None)
        with pytest.raises(DataError, match="no direct download URL"):
            fetch_source("toy", tmp_path / "dest", manifest_dir=manifest)
        with pytest.raises(DataError, match="built into the package.*tofmra phantom"):
            fetch_source("builtin-thing", tmp_path / "dest", manifest_dir=manifest)
    assert srv.requests == [], "nothing unverifiable is downloaded"


def test_cli_fetch(tmp_path, capsys):
    with _Server() as srv:
        manifest = _manifest(tmp_path / "m", srv.url)
        assert main(["fetch", "toy", "--dest", str(tmp_path / "dest"), "--manifest", str(manifest)]) == 0
        assert "payload.bin" in capsys.readouterr().out
        assert main(["fetch", "nope", "--dest", str(tmp_path / "dest"), "--manifest", str(manifest)]) == 2
    assert "unknown source 'nope'" in capsys.readouterr().err


def test_repository_manifest_lists_the_sources():
    sources = load_manifest()  # the repository's data_manifest/
    assert {"phantom", "ixi-mra", "ixi-vessel-labels", "topcow"} <= set(sources)
    ixi = sources["ixi-mra"]
    assert ixi.download_url == "https://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-MRA.tar"
    assert ixi.checksum == {"algorithm": "md5", "value": "29be7d2fee3998f978a55a9bdaf3407e"}
    assert ixi.licence == "CC BY-SA 3.0" and ixi.size_approximate
    zenodo = sources["ixi-vessel-labels-zenodo"]
    assert "17393202" in zenodo.url and zenodo.licence == "CC BY 4.0"
    assert zenodo.checksum == {"algorithm": "md5", "value": "96be3dd9d1413e8890f89721829a79f7"}
    assert "check the record" in zenodo.extra["layout"].lower()
    labels = sources["ixi-vessel-labels"]
    assert labels.kind == "file-list" and "Commons Clause" in labels.licence
    assert labels.extra["url_pattern"].startswith("https://github.com/risc-mi/cerebral-artery-annotation/raw/58fdad1")
    rows = _read_file_list(labels)
    assert len(rows) == 555 and rows[0] == ("data/Dataset600_IXI/labelsTr/IXI002-Guys-0828-MRA.nii.gz", 61347,
                                            "1f8f7d91f702cd4f2acef2126a35b86bc2f2c480ac11f799fa29f1b92558d943")
    assert "15692630" in sources["topcow"].url and sources["topcow"].checksum is None
    assert sources["phantom"].kind == "builtin"
    for s in sources.values():
        for key in ("layout", "citation", "prepare"):
            assert s.extra.get(key), (s.name, key)


def test_unreachable_server_is_a_clear_error(tmp_path):
    srv = _Server()  # bound but never started, then closed: the port refuses connections
    url = srv.url
    srv.httpd.server_close()
    with pytest.raises(DataError, match="download failed"):
        fetch_source("toy", tmp_path / "dest", manifest_dir=_manifest(tmp_path / "m", url), progress=False, timeout=5)
    assert not (tmp_path / "dest" / "payload.bin").exists()


# ----------------------------------------------------------------------------- ixi-vessel-labels: a file list
class _FileServer(_LocalServer):
    """127.0.0.1 server of a dict path -> bytes, with Range support; counts requests per path."""

    def __init__(self, files: dict[str, bytes], cut_once: str | None = None) -> None:
        self.files, self.requests, self.cut_once = files, [], cut_once
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if server.cut_once == self.path:
                    chunk, server.cut_once = chunk[: len(chunk) // 2], None
                    self.close_connection = True
                self.wfile.write(chunk)

        self.base = self._serve(Handler)


def _nifti_bytes(data, affine) -> bytes:
    import gzip

    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(data, affine).to_bytes(), mtime=0)


def _ixi_fixture(tmp_path):
    """Two fake multiclass labels (classes 0-5) and a tiny IXI tar with three volumes (one without a label)."""
    import io
    import tarfile

    import numpy as np

    rng = np.random.default_rng(0)
    affine = np.diag([0.47, 0.47, 0.8, 1.0])
    names = ["IXI002-Guys-0828-MRA.nii.gz", "IXI012-HH-1211-MRA.nii.gz"]
    labels = {n: rng.integers(0, 6, (6, 5, 4)).astype(np.uint8) for n in names}
    files = {f"/pinned/data/Dataset600_IXI/labelsTr/{n}": _nifti_bytes(v, affine) for n, v in labels.items()}
    tar_path = tmp_path / "IXI-MRA.tar"
    with tarfile.open(tar_path, "w") as tar:
        for n in [*names, "IXI099-IOP-0001-MRA.nii.gz"]:
            blob = _nifti_bytes(rng.integers(0, 400, (6, 5, 4)).astype(np.int16), affine)
            info = tarfile.TarInfo(n)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return files, labels, tar_path


def _list_manifest(folder: Path, base: str, files: dict[str, bytes], wrong_sha_for: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["# test list", "path\tbytes\tsha256"]
    for url_path, body in files.items():
        sha = hashlib.sha256(body).hexdigest() if url_path != wrong_sha_for else "0" * 64
        rows.append(f"{url_path.removeprefix('/pinned/')}\t{len(body)}\t{sha}")
    (folder / "labels.tsv").write_text("\n".join(rows) + "\n")
    (folder / "sources.yaml").write_text(yaml.safe_dump({"sources": [{
        "name": "ixi-vessel-labels", "kind": "file-list", "url": base, "licence": "test", "file_list": "labels.tsv",
        "url_pattern": f"{base}/pinned/<path>", "layout": "x", "citation": "x", "prepare": "x"}]}))
    return folder


def test_ixi_vessel_labels_fetched_verified_resumed_and_paired(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    files, labels, tar_path = _ixi_fixture(tmp_path)
    first = next(iter(files))
    with _FileServer(files, cut_once=first) as srv:
        manifest = _list_manifest(tmp_path / "m", srv.base, files)
        dest = tmp_path / "ixi"
        # the first file's transfer breaks half-way: a clear error, its .partial kept
        with pytest.raises(DataError, match="interrupted"):
            fetch_source("ixi-vessel-labels", dest, manifest_dir=manifest, progress=False, timeout=5)
        assert (dest / "raw" / f"{Path(first).name}.partial").exists()
        # the same command resumes with a Range request, verifies both files and pairs them with the tar
        rc = main(["fetch", "ixi-vessel-labels", "--dest", str(dest), "--manifest", str(manifest), "--ixi-tar", str(tar_path)])
        assert rc == 0
        assert any(path == first and rng and rng != "bytes=0-" for path, rng in srv.requests), "resumed with Range"
        n_requests = len(srv.requests)
        # everything verified: a third call needs no network
        fetch_source("ixi-vessel-labels", dest, manifest_dir=manifest, progress=False)
        assert len(srv.requests) == n_requests
    out = capsys.readouterr().out
    assert "paired 2 subjects" in out and "0 labels without an image" in out
    assert sorted(p.name for p in (dest / "images").iterdir()) == sorted(labels)  # IXI099 has no label: not extracted
    for name, multiclass in labels.items():
        written = nib.load(str(dest / "labels" / name))
        np.testing.assert_array_equal(np.asarray(written.dataobj), (multiclass > 0).astype(np.uint8))
        assert nib.load(str(dest / "images" / name)).shape == written.shape


def test_ixi_vessel_label_with_a_wrong_checksum_is_deleted(tmp_path):
    files, _, _ = _ixi_fixture(tmp_path)
    second = list(files)[1]
    with _FileServer(files) as srv:
        manifest = _list_manifest(tmp_path / "m", srv.base, files, wrong_sha_for=second)
        with pytest.raises(DataError, match="checksum mismatch"):
            fetch_source("ixi-vessel-labels", tmp_path / "ixi", manifest_dir=manifest, progress=False, timeout=5)
    raw = tmp_path / "ixi" / "raw"
    assert (raw / Path(list(files)[0]).name).exists()
    assert not (raw / Path(second).name).exists() and not list(raw.glob("*.partial"))
