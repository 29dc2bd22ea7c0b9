"""Stage `download@<dataset>`: make a raw dataset directory available.

Two ways:
- `--path LOCAL`: the output becomes a symlink to LOCAL (nothing is copied);
- `--url URL --sha256 HEX` (repeatable): each file is downloaded to
  `.<out>.downloads/<name>.part` (a sibling of `<out>`), resumed with HTTP
  Range requests after a broken transfer, checked against its SHA-256 (a
  mismatch moves the file to `<name>.bad` and fails: it is never used); zip
  and tar archives are extracted (optionally only `--member` paths, within
  `ArchiveLimits`), plain files placed as they are. The new `<out>` is built
  in a temporary sibling and renamed over the old one when every file is in.
  `<out>/.reltune-download.json` records what was fetched, so a rerun with
  the same URLs and checksums does nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reltune.data.values import printable
from reltune.errors import InputError
from reltune.io import atomic_directory, read_json, write_json
from reltune.progress import log, progress_bar

DOWNLOAD_DIR = ".downloads"  # reserved inside an output (earlier versions kept downloads there)
DOWNLOADS_SUFFIX = ".downloads"  # downloads wait in the sibling .<out>.downloads
MANIFEST_NAME = ".reltune-download.json"
CHUNK_BYTES = 1 << 20
DEFAULT_RETRIES = 5  # resume attempts per file after a broken transfer
DEFAULT_TIMEOUT_S = 60.0  # network timeout


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def link_local(local: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Make `out` a symlink to the existing directory `local` (replacing an older link)."""
    local_path = Path(local).expanduser().resolve()
    out_path = Path(out)
    if not local_path.is_dir():
        raise InputError(local, "local dataset directory not found")
    if out_path.exists() and not out_path.is_symlink():
        raise InputError(out_path, "exists and is not a symlink; remove it to link a local dataset")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(f".{out_path.name}.link.tmp")
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    temporary.symlink_to(local_path, target_is_directory=True)
    os.replace(temporary, out_path)  # atomic: the link is either old or new
    log(f"linked {out_path} -> {local_path}")
    return out_path


def file_name_of(url: str) -> str:
    """The file name a URL's path ends in (percent-decoded); one that is not a plain file name raises."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if name in ("", ".", "..") or "\\" in name or "\x00" in name:
        raise InputError(url, f"the URL does not end in a usable file name (got {name!r})")
    if name in (DOWNLOAD_DIR, MANIFEST_NAME):
        raise InputError(url, f"the URL's file name {name!r} would overwrite the download bookkeeping")
    return name


def _expected_total(response: http.client.HTTPResponse, start: int) -> int | None:
    """Total file size from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def download_file(url: str, part: Path, retries: int = DEFAULT_RETRIES, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Download `url` into `part`, resuming from its current size; return `part` when complete.

    Each attempt asks for the missing byte range; a server that ignores Range
    (200 instead of 206) restarts the file. A transfer that ends early is
    resumed up to `retries` times.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    attempts = 0
    with progress_bar() as progress:
        task = progress.add_task(f"download {part.stem}", total=None)
        while True:
            start = part.stat().st_size if part.exists() else 0
            request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
            total = None
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    if start and response.status == 200:
                        start = 0  # no Range support: start over
                    if response.status == 206:
                        content_range = response.headers.get("Content-Range", "")
                        if not content_range.startswith(f"bytes {start}-"):
                            raise InputError(url, f"server answered range {content_range!r} to a request from byte {start}")
                    total = _expected_total(response, start)
                    progress.update(task, total=total, completed=start)
                    with part.open("ab" if start else "wb") as handle:
                        while True:
                            block = response.read(CHUNK_BYTES)
                            if not block:
                                break
                            handle.write(block)
                            progress.advance(task, len(block))
            except urllib.error.HTTPError as error:
                if error.code == 416 and start:  # range beyond the end: the part is already complete
                    return part
                raise InputError(url, f"HTTP {error.code} {error.reason}") from None
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError, urllib.error.URLError) as error:
                attempts += 1
                if attempts > retries:
                    raise InputError(url, f"transfer failed after {retries} resumptions ({error})") from None
                log(f"transfer of {url} broke ({type(error).__name__}); resuming from byte {part.stat().st_size if part.exists() else 0}")
                continue
            size = part.stat().st_size
            if total is None or size >= total:
                return part
            attempts += 1
            if attempts > retries:
                raise InputError(url, f"transfer incomplete after {retries} resumptions ({size} of {total} bytes)")
            log(f"transfer of {url} ended at byte {size} of {total}; resuming")


def fetch_verified(url: str, sha256: str, downloads: Path, retries: int = DEFAULT_RETRIES, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Download (or reuse) one file and verify it; a mismatch is moved to `*.bad` and raises."""
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise InputError(url, f"--sha256 {sha256!r} is not a 64-digit hex digest")
    name = file_name_of(url)
    final = downloads / name
    if final.exists():
        if sha256_of(final) == expected:
            return final
        final.unlink()  # stale or foreign file: download afresh
    part = download_file(url, downloads / f"{name}.part", retries=retries, timeout=timeout)
    actual = sha256_of(part)
    if actual != expected:
        bad = downloads / f"{name}.bad"
        os.replace(part, bad)
        raise InputError(url, f"SHA-256 mismatch: expected {expected}, got {actual}; moved aside to {bad}")
    os.replace(part, final)
    return final


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may expand to (params.yaml `download.<name>`: max-members, max-bytes, max-ratio).

    The defaults admit the real datasets (VG150's images: 108,077 files,
    about 15 GB) and stop archive bombs: the ratio compares the uncompressed
    size of the extracted members with the archive's size on disk.
    """

    max_members: int = 1_000_000
    max_bytes: int = 256 * 2**30
    max_ratio: float = 100.0


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    if printable(name) != name:
        raise InputError(archive, f"archive member {printable(name)!r} has a name that is not valid UTF-8")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\x00" in name:
        raise InputError(archive, f"archive member {name!r} would be written outside the output directory")
    if path.parts and path.parts[0] in (DOWNLOAD_DIR, MANIFEST_NAME):
        raise InputError(archive, f"archive member {name!r} collides with the download bookkeeping ({path.parts[0]})")
    return path


def _selected(path: PurePosixPath, members: Sequence[str]) -> bool:
    if not members:
        return True
    return any(path == PurePosixPath(m) or PurePosixPath(m) in path.parents for m in members)


def _check_limits(archive: Path, sizes: list[int], limits: ArchiveLimits) -> None:
    """Refuse an archive whose chosen members exceed a limit, before anything is written."""
    total = sum(sizes)
    if len(sizes) > limits.max_members:
        raise InputError(archive, f"{len(sizes)} members exceed the limit max-members={limits.max_members}")
    if total > limits.max_bytes:
        raise InputError(archive, f"{total} uncompressed bytes exceed the limit max-bytes={limits.max_bytes}")
    ratio = total / max(1, archive.stat().st_size)
    if ratio > limits.max_ratio:
        raise InputError(archive, f"expands {ratio:.0f}-fold, beyond the limit max-ratio={limits.max_ratio:g}")


def _tar_member_kind(info: tarfile.TarInfo) -> str | None:
    """Why a tar member cannot be extracted as data (links, FIFOs, devices), or None."""
    if info.issym() or info.islnk():
        return "a link"
    if info.isfifo():
        return "a FIFO"
    if info.ischr() or info.isblk():
        return "a device"
    if not (info.isfile() or info.isdir()):
        return "not a regular file or directory"
    return None


def _extract_zip(archive: Path, staging: Path, members: Sequence[str], limits: ArchiveLimits) -> set[str]:
    with zipfile.ZipFile(archive) as bundle:
        chosen = [info for info in bundle.infolist() if _selected(_safe_member(info.filename, archive), members)]
        _check_limits(archive, [info.file_size for info in chosen], limits)
        for info in chosen:
            bundle.extract(info, staging)
    return {str(PurePosixPath(info.filename)) for info in chosen}


def _extract_tar(archive: Path, staging: Path, members: Sequence[str], limits: ArchiveLimits) -> set[str]:
    with tarfile.open(archive) as bundle:
        chosen = []
        for info in bundle.getmembers():
            path = _safe_member(info.name, archive)
            kind = _tar_member_kind(info)
            if kind:
                raise InputError(archive, f"archive member {info.name!r} is {kind}; refusing to extract")
            if _selected(path, members):
                chosen.append(info)
        _check_limits(archive, [info.size for info in chosen], limits)
        bundle.extractall(staging, members=chosen, filter="data")
    return {str(PurePosixPath(info.name)) for info in chosen}


def _move_into(staging: Path, out: Path) -> list[str]:
    """Move the extracted top-level entries over their namesakes in `out`; return their names."""
    names = sorted(entry.name for entry in staging.iterdir())
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(staging / name, target)
    return names


def extract_archive(
    archive: Path, out: Path, members: Sequence[str] = (), limits: ArchiveLimits = ArchiveLimits()
) -> list[str]:
    """Extract a zip/tar archive into `out` (via a temporary directory); return the top-level names."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=out))
    try:
        try:
            if zipfile.is_zipfile(archive):
                found = _extract_zip(archive, staging, members, limits)
            elif tarfile.is_tarfile(archive):
                found = _extract_tar(archive, staging, members, limits)
            else:
                raise InputError(archive, "not a zip or tar archive")
        # zipfile raises NotImplementedError for a compression method it lacks, RuntimeError for encrypted members
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, NotImplementedError, RuntimeError) as error:
            raise InputError(archive, f"corrupt or unsupported archive ({type(error).__name__}: {error})") from None
        missing = [m for m in members if not any(f == m or f.startswith(m.rstrip("/") + "/") for f in found)]
        if missing:
            raise InputError(archive, f"members not in the archive: {', '.join(missing)}")
        return _move_into(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def downloads_dir(out: Path) -> Path:
    """Where partial and verified downloads wait: a sibling of `out`, so that `out` can be replaced whole."""
    return out.parent / f".{out.name}{DOWNLOADS_SUFFIX}"


def _check_download_arguments(out: Path, dataset: str, urls: Sequence[str], sha256s: Sequence[str], members: Sequence[str]) -> list[str]:
    """The file name of each URL; refuses arguments that cannot be fetched or recorded."""
    if not urls:
        raise InputError(out, f"{dataset}: give --path LOCAL or at least one --url with --sha256")
    if len(urls) != len(sha256s):
        raise InputError(out, f"{len(urls)} --url but {len(sha256s)} --sha256: give one checksum per URL")
    for text in (dataset, *urls, *sha256s, *members):  # all are written into the manifest (UTF-8 JSON)
        if printable(text) != text:
            raise InputError(out, f"argument {printable(text)!r} is not valid UTF-8")
    names = [file_name_of(url) for url in urls]
    if len(set(names)) != len(names):
        raise InputError(out, f"two URLs end in the same file name: {names}")
    return names


def _read_manifest(previous: Path | None, dataset: str) -> dict:
    """The previous run's record of what was fetched; an unusable one means nothing is known."""
    empty = {"dataset": dataset, "files": {}}
    if previous is None or not (previous / MANIFEST_NAME).is_file():
        return empty
    try:
        manifest = read_json(previous / MANIFEST_NAME)
    except InputError as error:
        log(f"{dataset}: ignoring the download record ({error})")
        return empty
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        log(f"{dataset}: ignoring the download record {previous / MANIFEST_NAME} (not a record)")
        return empty
    return manifest


def _link_tree(previous: Path, staging: Path) -> None:
    """The previous output in the new one, as hard links (no data copied; the old files are never written)."""

    def link(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:  # a file system without hard links
            shutil.copy2(source, target)

    shutil.copytree(previous, staging, symlinks=True, copy_function=link, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(DOWNLOAD_DIR))


def fetch_dataset(
    dataset: str,
    out: str | os.PathLike,
    path: str | os.PathLike | None = None,
    urls: Sequence[str] = (),
    sha256s: Sequence[str] = (),
    members: Sequence[str] = (),
    retries: int = DEFAULT_RETRIES,
    timeout: float = DEFAULT_TIMEOUT_S,
    limits: ArchiveLimits = ArchiveLimits(),
) -> Path:
    """Link a local copy, or download, verify and extract the files of one dataset into `out`.

    The new `out` is built in a temporary sibling (holding the previous
    download's files as hard links) and renamed over the old one only when
    every file is in: a failed run leaves the previous output whole. Partial
    downloads stay in `downloads_dir(out)` for the next run to resume.
    """
    out_path = Path(out)
    if path is not None:
        if urls:
            raise InputError(out_path, "give either --path or --url, not both")
        return link_local(path, out_path)
    names = _check_download_arguments(out_path, dataset, urls, sha256s, members)
    previous = out_path if out_path.is_dir() and not out_path.is_symlink() else None  # not an earlier --path link
    manifest = _read_manifest(previous, dataset)
    wanted = {
        name: {"url": url, "sha256": sha256.lower(), "members": list(members)}
        for url, sha256, name in zip(urls, sha256s, names)
    }
    todo = [name for name in names if {k: manifest["files"].get(name, {}).get(k) for k in wanted[name]} != wanted[name]]
    for name in sorted(set(names) - set(todo)):
        log(f"{dataset}: {name} already fetched and verified")
    if not todo:
        return out_path
    downloads = downloads_dir(out_path)
    verified_files = []
    with atomic_directory(out_path) as staging:
        if previous is not None:
            _link_tree(previous, staging)
        for name in todo:
            verified = fetch_verified(wanted[name]["url"], wanted[name]["sha256"], downloads, retries=retries, timeout=timeout)
            verified_files.append(verified)
            if is_archive(verified):
                extracted = extract_archive(verified, staging, members, limits)
            else:
                _move_into_place(verified, staging / name)
                extracted = [name]
            manifest["files"][name] = {**wanted[name], "extracted": extracted}
            log(f"{dataset}: {name} verified ({wanted[name]['sha256'][:12]}...), {len(extracted)} entries")
        write_json(manifest, staging / MANIFEST_NAME)
    for verified in verified_files:  # the output holds them now; the manifest keeps the checksums
        verified.unlink(missing_ok=True)
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    return out_path


def _move_into_place(verified: Path, target: Path) -> None:
    """A verified plain file into the new output (linked: it stays reusable until the run succeeds)."""
    if target.exists() or target.is_symlink():
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    try:
        os.link(verified, target)
    except OSError:
        shutil.copy2(verified, target)
