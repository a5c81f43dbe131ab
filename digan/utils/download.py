"""Fetch model files that cannot ship with the package (FID Inception, insightface ``buffalo_l``).

Online users get the file on first use, like clean-fid and insightface themselves do; offline
(or with ``DIGAN_BENCH_OFFLINE=1``) nothing is attempted and the caller's
:class:`~digan.errors.MissingAssetError` names the file, where to put it and where to get it.
Downloads go to a temporary sibling, are checked (size, optional sha256, zip integrity) and only
then moved into place, so an interrupted download never leaves a broken model behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from digan.errors import DiganError

__all__ = ["offline", "fetch", "fetch_and_unzip", "DownloadError"]


class DownloadError(DiganError):
    """A download was attempted and failed (no network, bad checksum, broken archive)."""


def offline() -> bool:
    """True when ``DIGAN_BENCH_OFFLINE`` is set to anything but ``0``/empty."""
    return os.environ.get("DIGAN_BENCH_OFFLINE", "") not in ("", "0")


def _download_to(url: str, fh, what: str, timeout: float) -> int:
    from digan.utils.progress import err_console, progress

    try:
        resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed, documented URLs
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadError(f"could not download {what} from {url} ({getattr(e, 'reason', e)})") from e
    total = int(resp.headers.get("Content-Length") or 0)
    err_console.print(f"downloading {what} from {url}")
    n = 0
    with resp, progress() as bar:
        task = bar.add_task(f"download {what}", total=total or None, info="")
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            fh.write(chunk)
            n += len(chunk)
            bar.update(task, advance=len(chunk))
    if total and n != total:
        raise DownloadError(f"download of {what} from {url} stopped at {n} of {total} bytes; try again")
    return n


def fetch(url: str, dest: str | Path, what: str, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically (checking ``sha256`` when given); return ``dest``.

    Raises :class:`DownloadError` when offline mode is on or the download fails.
    """
    dest = Path(dest).expanduser()
    if offline():
        raise DownloadError(f"{what} is not present and DIGAN_BENCH_OFFLINE is set, so it was not downloaded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            _download_to(url, fh, what, timeout)
        if sha256:
            h = hashlib.sha256(tmp.read_bytes()).hexdigest()
            if h != sha256:
                raise DownloadError(f"{what} from {url} has sha256 {h[:12]}..., expected {sha256[:12]}...; the file was discarded")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch_and_unzip(url: str, dest_dir: str | Path, what: str, members: tuple[str, ...] = (), timeout: float = 60.0) -> Path:
    """Download a zip and unpack it into ``dest_dir`` (flattening folders inside the archive).

    ``members`` lists file names that must be in the archive; the folder appears only when the
    whole archive unpacked.
    """
    dest_dir = Path(dest_dir).expanduser()
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".part", dir=dest_dir.parent))
    try:
        archive = fetch(url, work / "archive.zip", what, timeout=timeout)
        try:
            with zipfile.ZipFile(archive) as z:
                names = {Path(n).name: n for n in z.namelist() if not n.endswith("/")}
                missing = [m for m in members if m not in names]
                if missing:
                    raise DownloadError(f"{what} from {url} lacks {missing[0]}; the archive was discarded")
                out = work / "files"
                out.mkdir()
                for base, full in names.items():
                    with z.open(full) as src, open(out / base, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as e:
            raise DownloadError(f"{what} from {url} is not a valid zip archive; try again") from e
        dest_dir.mkdir(parents=True, exist_ok=True)
        for f in (work / "files").iterdir():
            os.replace(f, dest_dir / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest_dir
