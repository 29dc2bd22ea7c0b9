"""Download stage against a local HTTP server (127.0.0.1) with Range support."""

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reltune.data.download import fetch_dataset
from reltune.errors import InputError
from test_data_helpers import data_cli


class RangeHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server naming)
        server = self.server
        body = server.files.get(self.path)
        byte_range = self.headers.get("Range")
        server.requests.append((self.path, byte_range))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if byte_range and server.range_support:
            start = int(byte_range.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.path in server.truncate_once:
            server.truncate_once.discard(self.path)
            self.wfile.write(payload[: len(payload) // 3])  # then the connection closes early
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.requests, httpd.truncate_once, httpd.range_support = {}, [], set(), True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def zip_bytes(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def tar_gz_bytes(files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


# incompressible-ish content so that the archive is large enough to truncate mid-file
PAYLOAD = bytes((i * 7919 + (i >> 8) * 31) % 251 for i in range(300_000))


def test_zip_download_is_verified_extracted_and_not_repeated(server, tmp_path):
    archive = zip_bytes({"vg/image_data.json": b"[]", "vg/VG_100K/1.jpg": PAYLOAD})
    server.files["/vg.zip"] = archive
    out = tmp_path / "raw"
    fetch_dataset("vg150", out, urls=[f"{server.url}/vg.zip"], sha256s=[sha(archive)])
    assert (out / "vg" / "VG_100K" / "1.jpg").read_bytes() == PAYLOAD
    assert (out / "vg" / "image_data.json").read_bytes() == b"[]"
    manifest = json.loads((out / ".reltune-download.json").read_text())
    assert manifest["files"]["vg.zip"]["sha256"] == sha(archive) and manifest["files"]["vg.zip"]["extracted"] == ["vg"]
    assert not (tmp_path / ".raw.downloads").exists()  # the verified archive is removed after extraction
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temporary sibling left
    fetch_dataset("vg150", out, urls=[f"{server.url}/vg.zip"], sha256s=[sha(archive)])
    assert len(server.requests) == 1  # the rerun downloaded nothing


def test_truncated_transfer_resumes_with_a_range_request(server, tmp_path):
    archive = tar_gz_bytes({"oi/annotations/a.json": PAYLOAD, "oi/images/x.jpg": b"jpeg"})
    server.files["/oi.tar.gz"] = archive
    server.truncate_once.add("/oi.tar.gz")
    out = tmp_path / "raw"
    fetch_dataset("oiv6", out, urls=[f"{server.url}/oi.tar.gz"], sha256s=[sha(archive)])
    assert server.requests == [("/oi.tar.gz", None), ("/oi.tar.gz", f"bytes={len(archive) // 3}-")]
    assert (out / "oi" / "annotations" / "a.json").read_bytes() == PAYLOAD


def test_server_without_range_support_restarts_the_file(server, tmp_path):
    archive = zip_bytes({"data.bin": PAYLOAD})
    server.files["/d.zip"] = archive
    server.truncate_once.add("/d.zip")
    server.range_support = False
    out = tmp_path / "raw"
    fetch_dataset("x", out, urls=[f"{server.url}/d.zip"], sha256s=[sha(archive)])
    assert (out / "data.bin").read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_wrong_checksum_moves_the_file_aside_and_extracts_nothing(server, tmp_path, monkeypatch, capsys):
    archive = zip_bytes({"gqa/GQA_200_Test.json": b"{}"})
    server.files["/gqa.zip"] = archive
    out = tmp_path / "raw"
    wrong = "0" * 64
    code = data_cli(["data", "download", "--dataset", "gqa200", "--out", str(out), "--url", f"{server.url}/gqa.zip",
                     "--sha256", wrong], monkeypatch)
    error = capsys.readouterr().err.strip()
    assert code == 2 and "SHA-256 mismatch" in error and sha(archive) in error and len(error.splitlines()) == 1
    assert (tmp_path / ".raw.downloads" / "gqa.zip.bad").read_bytes() == archive
    assert not out.exists() and not (tmp_path / ".raw.downloads" / "gqa.zip").exists()
    # the right checksum then downloads afresh and never uses the .bad file
    fetch_dataset("gqa200", out, urls=[f"{server.url}/gqa.zip"], sha256s=[sha(archive)])
    assert (out / "gqa" / "GQA_200_Test.json").read_bytes() == b"{}"


def test_members_select_what_is_extracted_and_plain_files_land_in_out(server, tmp_path):
    archive = tar_gz_bytes({"pack/keep/a.txt": b"a", "pack/skip/b.txt": b"b"})
    server.files["/pack.tgz"] = archive
    server.files["/dicts.json"] = b'{"x": 1}'
    out = tmp_path / "raw"
    fetch_dataset(
        "vg150", out, urls=[f"{server.url}/pack.tgz", f"{server.url}/dicts.json"],
        sha256s=[sha(archive), sha(b'{"x": 1}')], members=["pack/keep"],
    )
    assert (out / "pack" / "keep" / "a.txt").read_bytes() == b"a"
    assert not (out / "pack" / "skip").exists()
    assert (out / "dicts.json").read_bytes() == b'{"x": 1}'
    with pytest.raises(InputError, match="members not in the archive: pack/none"):
        fetch_dataset("vg150", tmp_path / "other", urls=[f"{server.url}/pack.tgz"], sha256s=[sha(archive)], members=["pack/none"])


def test_unsafe_archive_member_is_refused(server, tmp_path):
    archive = zip_bytes({"../escape.txt": b"x"})
    server.files["/evil.zip"] = archive
    with pytest.raises(InputError, match="outside the output directory"):
        fetch_dataset("x", tmp_path / "raw", urls=[f"{server.url}/evil.zip"], sha256s=[sha(archive)])
    assert not (tmp_path / "escape.txt").exists()


def test_local_path_becomes_a_symlink(tmp_path, monkeypatch):
    local = tmp_path / "my_vg"
    local.mkdir()
    (local / "image_data.json").write_text("[]")
    out = tmp_path / "data" / "raw" / "vg150"
    assert data_cli(["data", "download", "--dataset", "vg150", "--out", str(out), "--path", str(local)], monkeypatch) == 0
    assert out.is_symlink() and out.resolve() == local.resolve()
    assert (out / "image_data.json").read_text() == "[]"
    second = tmp_path / "my_vg2"
    second.mkdir()
    fetch_dataset("vg150", out, path=second)  # relinking replaces the link
    assert out.resolve() == second.resolve()
    real = tmp_path / "real"
    real.mkdir()
    with pytest.raises(InputError, match="exists and is not a symlink"):
        fetch_dataset("vg150", real, path=second)
    with pytest.raises(InputError, match="local dataset directory not found"):
        fetch_dataset("vg150", tmp_path / "x", path=tmp_path / "missing")


def test_url_and_checksum_counts_must_match(tmp_path):
    with pytest.raises(InputError, match="2 --url but 1 --sha256"):
        fetch_dataset("x", tmp_path / "raw", urls=["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"], sha256s=["0" * 64])


def test_failed_download_leaves_the_previous_output_whole_and_resumes(server, tmp_path):
    first = zip_bytes({"vg/image_data.json": b"[1]"})
    second = tar_gz_bytes({"VG_100K/1.jpg": b"jpeg"})  # archives replace top-level namesakes: a different one
    server.files["/a.zip"], server.files["/b.tgz"] = first, second
    out = tmp_path / "raw"
    fetch_dataset("vg150", out, urls=[f"{server.url}/a.zip"], sha256s=[sha(first)])
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # a new version of a.zip plus b.tgz with a wrong checksum: the run fails after a.zip is extracted
    changed = zip_bytes({"vg/image_data.json": b"[2]"})
    server.files["/a.zip"] = changed
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        fetch_dataset("vg150", out, urls=[f"{server.url}/a.zip", f"{server.url}/b.tgz"], sha256s=[sha(changed), "0" * 64])
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".raw.downloads", "raw"]
    requests = len(server.requests)
    fetch_dataset("vg150", out, urls=[f"{server.url}/a.zip", f"{server.url}/b.tgz"], sha256s=[sha(changed), sha(second)])
    assert len(server.requests) == requests + 1  # the verified a.zip was kept: only b.tgz is fetched
    assert (out / "vg" / "image_data.json").read_bytes() == b"[2]" and (out / "VG_100K" / "1.jpg").read_bytes() == b"jpeg"
    assert [p.name for p in (tmp_path / ".raw.downloads").iterdir()] == ["b.tgz.bad"]  # kept as evidence, never used
