"""Downloads (resume, checksums, offline), safe extraction and checkpoint location."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import tarfile
import threading
from pathlib import Path

import pytest

from quant import fetch
from quant.errors import BadInputError, MissingToolError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring 'Range: bytes=N-'; counts requests."""

    requests: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        wanted = self.headers.get("Range")
        type(self).requests.append(wanted)
        start = int(re.match(r"bytes=(\d+)-", wanted).group(1)) if wanted else 0
        body = PAYLOAD[start:]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    _RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_download_records_checksum_and_reuses(server, cache):
    path = fetch.download(f"{server}/model.tgz", progress=False)
    assert path.read_bytes() == PAYLOAD
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert (path.parent / "model.tgz.sha256").read_text().strip() == digest
    assert fetch.download(f"{server}/model.tgz", progress=False) == path
    assert len(_RangeHandler.requests) == 1  # second call served from the cache


def test_partial_download_is_resumed(server, cache):
    part = cache / "downloads" / "model.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:1000])
    path = fetch.download(f"{server}/model.tgz", progress=False)
    assert _RangeHandler.requests == ["bytes=1000-"]
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()


def test_corrupted_cache_is_downloaded_again(server, cache):
    path = fetch.download(f"{server}/model.tgz", progress=False)
    path.write_bytes(b"garbage")
    assert fetch.download(f"{server}/model.tgz", progress=False).read_bytes() == PAYLOAD
    assert len(_RangeHandler.requests) == 2


def test_published_checksum_mismatch_is_refused(server, cache):
    with pytest.raises(BadInputError, match="does not match"):
        fetch.download(f"{server}/model.tgz", sha256="0" * 64, progress=False)
    assert not list((cache / "downloads").glob("model.tgz*"))


def test_offline_names_url_and_option(cache):
    url = "http://127.0.0.1:9/mobilenet_v2_1.0_224.tgz"  # discard port: connection refused
    with pytest.raises(MissingToolError, match=r"127\.0\.0\.1:9/mobilenet.*--checkpoint"):
        fetch.download(url, progress=False)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_and_locate_checkpoint(tmp_path):
    archive = _tar(tmp_path / "m.tgz", {
        "./m.ckpt.index": b"i", "./m.ckpt.data-00000-of-00001": b"d", "./m.tflite": b"t",
    })
    files = fetch.locate_checkpoint(archive, expected_prefix="m.ckpt")
    assert files.prefix.name == "m.ckpt"
    assert [p.name for p in files.tflite_files] == ["m.tflite"]
    assert files.pipeline_config is None
    assert fetch.locate_checkpoint(files.prefix).prefix == files.prefix  # prefix accepted
    assert fetch.locate_checkpoint(files.folder).prefix == files.prefix  # folder accepted


def test_path_traversal_is_refused(tmp_path):
    archive = _tar(tmp_path / "evil.tgz", {"../escaped.txt": b"x"})
    with pytest.raises(BadInputError, match="unsafe"):
        fetch.extract(archive)
    assert not (tmp_path / "escaped.txt").exists()


def test_link_outside_is_refused(tmp_path):
    archive = tmp_path / "link.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(BadInputError, match="cannot extract"):
        fetch.extract(archive)


def test_truncated_archive(tmp_path):
    good = _tar(tmp_path / "good.tgz", {"m.ckpt.index": PAYLOAD})
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(BadInputError, match="truncated"):
        fetch.locate_checkpoint(truncated)
    assert not list((tmp_path / "cache" / "extracted").glob("truncated*"))


def test_folder_without_checkpoint(tmp_path):
    with pytest.raises(BadInputError, match="holds no checkpoint"):
        fetch.locate_checkpoint(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(BadInputError, match="no such"):
        fetch.locate_checkpoint(tmp_path / "absent.ckpt")
