"""Downloads (resume, checksums, offline), safe extraction and checkpoint location."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from edgeq.errors import BadInputError, MissingToolError
from quant import fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path, honouring 'Range: bytes=N-'; counts requests.

    ``ranges`` False: ignore Range and send everything (200); ``cut``: the first response
    stops after that many bytes and closes the connection (an interrupted download);
    ``delay``: seconds to wait before each of 16 pieces of the body (a slow server).
    """

    requests: list[str | None] = []
    ranges = True
    cut: int | None = None
    payload = PAYLOAD
    delay = 0.0

    def do_GET(self) -> None:  # noqa: N802
        cls = type(self)
        wanted = self.headers.get("Range") if cls.ranges else None
        cls.requests.append(self.headers.get("Range"))
        start = int(re.match(r"bytes=(\d+)-", wanted).group(1)) if wanted else 0
        body = cls.payload[start:]
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(body)))
        if wanted:
            size = len(cls.payload)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        cut, cls.cut = cls.cut, None
        body = body if cut is None else body[:cut]
        piece = -(-len(body) // 16)
        for offset in range(0, len(body), piece):
            time.sleep(cls.delay)
            self.wfile.write(body[offset:offset + piece])
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    _RangeHandler.requests = []
    _RangeHandler.ranges = True
    _RangeHandler.cut = None
    _RangeHandler.payload = PAYLOAD
    _RangeHandler.delay = 0.0
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


def test_cached_file_failing_the_published_checksum_is_downloaded_again(server, cache):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = fetch.download(f"{server}/model.tgz", sha256=digest, progress=False)
    path.write_bytes(PAYLOAD[:-1] + b"x")  # same size, one byte changed
    assert fetch.download(f"{server}/model.tgz", sha256=digest, progress=False) == path
    assert path.read_bytes() == PAYLOAD
    assert len(_RangeHandler.requests) == 2


def test_cached_file_without_a_record_is_never_used(server, cache):
    path = fetch.download(f"{server}/model.tgz", progress=False)
    path.with_name("model.tgz.sha256").unlink()
    path.write_bytes(b"unverifiable")
    assert fetch.download(f"{server}/model.tgz", progress=False).read_bytes() == PAYLOAD
    assert len(_RangeHandler.requests) == 2


def test_interrupted_download_is_kept_and_resumed(server, cache):
    _RangeHandler.cut = 300_000
    with pytest.raises(MissingToolError, match="interrupted.*300000 of 1048576 bytes.*resume"):
        fetch.download(f"{server}/model.tgz", progress=False)
    part = cache / "downloads" / "model.tgz.part"
    assert part.stat().st_size == 300_000
    assert not (cache / "downloads" / "model.tgz").exists()  # never renamed into place
    path = fetch.download(f"{server}/model.tgz", progress=False)
    assert _RangeHandler.requests == [None, "bytes=300000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_server_without_ranges_restarts_the_download(server, cache):
    _RangeHandler.ranges = False
    part = cache / "downloads" / "model.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale partial bytes")
    path = fetch.download(f"{server}/model.tgz", progress=False)
    assert _RangeHandler.requests == [f"bytes={len(b'stale partial bytes')}-"]
    assert path.read_bytes() == PAYLOAD


def test_corrupt_partial_failing_the_checksum_is_dropped(server, cache):
    part = cache / "downloads" / "model.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 1000)  # wrong bytes, resumed after them
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(BadInputError, match="does not match"):
        fetch.download(f"{server}/model.tgz", sha256=digest, progress=False)
    assert not part.exists()
    path = fetch.download(f"{server}/model.tgz", sha256=digest, progress=False)
    assert path.read_bytes() == PAYLOAD


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


_LOCATE = "import sys; from quant.fetch import locate_checkpoint; " \
          "print(locate_checkpoint(sys.argv[1]).prefix)"


def test_concurrent_runs_download_and_extract_once(server, cache, tmp_path):
    """Two processes asking for one URL at once: one download, one extraction, both served."""
    data = os.urandom(400_000)
    archive = _tar(tmp_path / "m.tgz", {"m.ckpt.index": b"i", "m.ckpt.data-00000-of-00001": data})
    _RangeHandler.payload, _RangeHandler.delay = archive.read_bytes(), 0.1  # 1.6 s a download
    env = {**os.environ, "EDGEQ_CACHE": str(cache),
           "PYTHONPATH": str(Path(__file__).parents[1])}
    runs = [subprocess.Popen([sys.executable, "-c", _LOCATE, f"{server}/m.tgz"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    prefixes = {Path(out.strip()) for out, _ in results}
    assert len(prefixes) == 1 and _RangeHandler.requests == [None]  # the other one waited
    prefix = prefixes.pop()
    assert prefix.with_name("m.ckpt.data-00000-of-00001").read_bytes() == data
    left = sorted(p.name for folder in (cache / "downloads", cache / "extracted")
                  for p in folder.iterdir())
    assert left == sorted(["m.tgz", "m.tgz.sha256", prefix.parent.name]), left


def _special(path: Path, name: str, kind: bytes, linkname: str = "") -> Path:
    """A .tgz with one member of the given tarfile type (link, device, FIFO)."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)
    return path


def _refused(archive: Path, message: str) -> None:
    """Extraction fails with one line naming the archive and why; nothing is extracted."""
    with pytest.raises(BadInputError, match=message) as info:
        fetch.extract(archive)
    text = str(info.value)
    assert text.startswith(str(archive)) and "\n" not in text
    assert not list((archive.parent / "cache" / "extracted").glob("*"))


@pytest.mark.parametrize("name", ["../escaped.txt", "a/../../escaped.txt", "a/b/../../../x"])
def test_path_traversal_is_refused(tmp_path, name):
    archive = _tar(tmp_path / "evil.tgz", {"ok.txt": b"fine", name: b"x"})
    _refused(archive, r"unsafe archive, refusing member .*\.\.")
    assert not (tmp_path / "escaped.txt").exists()


def test_absolute_path_is_refused(tmp_path):
    target = tmp_path / "absolute.txt"
    _refused(_tar(tmp_path / "abs.tgz", {str(target): b"x"}), "its path is absolute")
    assert not target.exists()


@pytest.mark.parametrize(("kind", "linkname", "message"), [
    (tarfile.SYMTYPE, "/etc/passwd", "symbolic link to '/etc/passwd'"),
    (tarfile.SYMTYPE, "../../outside", "symbolic link to '../../outside'"),
    (tarfile.SYMTYPE, "m.ckpt.index", "symbolic link"),  # any link, even inside
    (tarfile.LNKTYPE, "/etc/passwd", "hard link to '/etc/passwd'"),
    (tarfile.LNKTYPE, "../outside", "hard link to '../outside'"),
])
def test_links_are_refused(tmp_path, kind, linkname, message):
    _refused(_special(tmp_path / "link.tgz", "passwd", kind, linkname), message)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(tmp_path, kind):
    _refused(_special(tmp_path / "dev.tgz", "dev/thing", kind), "device file or FIFO")


def test_member_and_total_size_limits(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "big.tgz", {"a.bin": b"a" * 600, "b.bin": b"b" * 600})
    monkeypatch.setattr(fetch, "MAX_MEMBER_BYTES", 500)
    _refused(archive, "refusing member 'a.bin'.*limit per file")
    monkeypatch.setattr(fetch, "MAX_MEMBER_BYTES", 1000)
    monkeypatch.setattr(fetch, "MAX_EXTRACTED_BYTES", 1000)
    _refused(archive, "would extract .* GB, over the .* GB limit")
    monkeypatch.setattr(fetch, "MAX_EXTRACTED_BYTES", 2000)
    assert (fetch.extract(archive) / "b.bin").read_bytes() == b"b" * 600


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
