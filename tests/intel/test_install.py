from __future__ import annotations

import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from regiongate.errors import DataError, FetchError, SnapshotError, SourceError
from regiongate.intel import install as inst
from regiongate.intel.install import SourceSpec, install, parse_from, remove_source
from regiongate.intel.snapshot import Snapshot
from tests.conftest import write_mmdb


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def geo(tmp_path: Path) -> Path:
    return write_mmdb(
        tmp_path / "MyGeo.mmdb",
        [
            ("1.0.0.0/24", {"country": {"iso_code": "AU"}}),
            ("2.0.0.0/16", {"country": {"iso_code": "UA"}, "subdivisions": [{"iso_code": "43"}]}),
        ],
    )


def _lookup(home: Path, ip: str) -> tuple[str | None, str | None]:
    with Snapshot(home / "intel.rgsnap") as snap:
        o = snap.lookup(ip)
        return o.country, o.subdivision


def test_install_user_source_then_idempotent(home: Path, geo: Path) -> None:
    first = install(home=home, extra=[parse_from(str(geo))], defaults=())
    assert first.changed
    assert _lookup(home, "2.0.0.1") == ("UA", "UA-43")
    names = [s["name"] for s in first.header["sources"]]
    assert names == ["iana-special", "mygeo"]
    mygeo = first.header["sources"][1]
    assert mygeo["format"] == "mmdb" and mygeo["user"] and mygeo["data_date"]
    # Remembered: a plain rerun installs the same thing and changes nothing.
    mtime = (home / "intel.rgsnap").stat().st_mtime_ns
    again = install(home=home, defaults=())
    assert not again.changed
    assert (home / "intel.rgsnap").stat().st_mtime_ns == mtime
    assert again.header["body_sha256"] == first.header["body_sha256"]
    forced = install(home=home, defaults=(), force=True)
    assert forced.changed


def test_corrupt_source_leaves_previous_snapshot(home: Path, geo: Path, tmp_path: Path) -> None:
    install(home=home, extra=[parse_from(str(geo))], defaults=())
    before = (home / "intel.rgsnap").read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("1.0.0.0,1.0.0.255,AU\nnot,a,range\n")
    with pytest.raises(SourceError, match=r"bad\.csv:2"):
        install(home=home, extra=[parse_from(f"extra={bad}")], defaults=())
    assert (home / "intel.rgsnap").read_bytes() == before
    assert _lookup(home, "1.0.0.1") == ("AU", None)
    assert not list(home.glob(".*.tmp"))
    # The failed source is not remembered, and a failed replacement keeps the old files.
    assert not install(home=home, defaults=()).changed
    with pytest.raises(SourceError):
        install(home=home, extra=[parse_from(f"mygeo={bad}")], defaults=())
    assert not install(home=home, defaults=()).changed
    assert sorted(p.name for p in (home / "sources").iterdir()) == ["mygeo"]


def test_interrupted_compile_leaves_previous_snapshot(
    home: Path, geo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home=home, extra=[parse_from(str(geo))], defaults=())
    before = (home / "intel.rgsnap").read_bytes()
    real = inst.compile_snapshot

    def half_then_die(sources, out, **kw):  # type: ignore[no-untyped-def]
        real(sources, out, **kw)
        with out.open("r+b") as fh:  # a partial write, then the process is interrupted
            fh.truncate(out.stat().st_size // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(inst, "compile_snapshot", half_then_die)
    other = write_mmdb(tmp_path / "other.mmdb", [("1.0.0.0/24", {"country": {"iso_code": "NZ"}})])
    with pytest.raises(KeyboardInterrupt):
        install(home=home, extra=[parse_from(f"mygeo={other}")], defaults=())
    assert (home / "intel.rgsnap").read_bytes() == before
    assert not list(home.glob(".*.tmp"))


def test_verification_refuses_a_broken_compile(
    home: Path, geo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(home=home, extra=[parse_from(str(geo))], defaults=())
    before = (home / "intel.rgsnap").read_bytes()
    real = inst.compile_snapshot

    def corrupting(sources, out, **kw):  # type: ignore[no-untyped-def]
        header = real(sources, out, **kw)
        data = bytearray(out.read_bytes())
        data[-1] ^= 1
        out.write_bytes(bytes(data))
        return header

    monkeypatch.setattr(inst, "compile_snapshot", corrupting)
    with pytest.raises(SnapshotError, match="checksum"):
        install(home=home, defaults=(), force=True)
    assert (home / "intel.rgsnap").read_bytes() == before


def test_replace_by_name_and_remove(home: Path, geo: Path, tmp_path: Path) -> None:
    install(home=home, extra=[parse_from(f"geo={geo}")], defaults=())
    assert _lookup(home, "1.0.0.1") == ("AU", None)
    nz = write_mmdb(tmp_path / "nz.mmdb", [("1.0.0.0/24", {"country": {"iso_code": "NZ"}})])
    result = install(home=home, extra=[parse_from(f"geo={nz}")], defaults=())
    assert [s["name"] for s in result.header["sources"]] == ["iana-special", "geo"]
    assert _lookup(home, "1.0.0.1") == ("NZ", None)
    remove_source("geo", home)
    with pytest.raises(DataError, match="no source could be fetched"):
        install(home=home, defaults=())
    with pytest.raises(DataError, match="no user source named 'geo'"):
        remove_source("geo", home)


def test_user_source_replaces_a_default_of_the_same_name(
    home: Path, geo: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "asn.csv"
    csv.write_text('1.0.0.0,1.0.0.255,64500,"Ex"\n')
    default = SourceSpec(name="asn", kind="path", location=str(csv), license="x")
    result = install(home=home, extra=[parse_from(f"asn={geo}")], defaults=[default])
    (asn,) = [s for s in result.header["sources"] if s["name"] == "asn"]
    assert asn["format"] == "mmdb" and asn["user"]


def test_sanity_minimum_and_missing_sources(home: Path, geo: Path, tmp_path: Path) -> None:
    tiny = SourceSpec(name="tiny", kind="path", location=str(geo), min_ranges=1000)
    with pytest.raises(SourceError, match="looks truncated"):
        install(home=home, defaults=[tiny])
    gone = SourceSpec(name="gone", kind="path", location=str(tmp_path / "nope.mmdb"))
    with pytest.raises(SourceError, match="is not a file"):
        install(home=home, defaults=[gone])
    ok = SourceSpec(name="ok", kind="path", location=str(geo))
    result = install(home=home, defaults=[gone, ok], allow_missing=True)
    assert [s["name"] for s in result.header["sources"]] == ["iana-special", "ok"]
    assert any("gone skipped" in w for w in result.warnings)


def test_concurrent_install_is_refused(home: Path, geo: Path) -> None:
    with inst._lock(home), pytest.raises(DataError, match="another `regiongate data install`"):
        install(home=home, extra=[parse_from(str(geo))], defaults=())


# --- URLs against a local server ---------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, geo: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(geo, arcname="GeoLite2-Test_20261120/GeoLite2-Test.mmdb")
        readme = root / "README.txt"
        readme.write_text("terms")
        tar.add(readme, arcname="GeoLite2-Test_20261120/README.txt")
    (root / "GeoLite2-Test.tar.gz").write_bytes(buf.getvalue())
    (root / "broken.tar.gz").write_bytes(buf.getvalue()[:100])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_install_from_url_archive(home: Path, served: str) -> None:
    result = install(home=home, extra=[parse_from(f"{served}/GeoLite2-Test.tar.gz")], defaults=())
    (src,) = [s for s in result.header["sources"] if s["name"] != "iana-special"]
    assert src["name"] == "geolite2-test"
    assert [f["name"] for f in src["files"]] == ["GeoLite2-Test.mmdb"]
    assert _lookup(home, "1.0.0.1") == ("AU", None)


def test_install_from_bad_urls(home: Path, served: str) -> None:
    with pytest.raises(FetchError, match="404"):
        install(home=home, extra=[parse_from(f"{served}/missing.mmdb")], defaults=())
    with pytest.raises(SourceError, match="cannot unpack"):
        install(home=home, extra=[parse_from(f"x={served}/broken.tar.gz")], defaults=())
    with pytest.raises(FetchError, match="cannot download"):
        install(home=home, extra=[parse_from("http://127.0.0.1:9/x.mmdb")], defaults=())
    assert not (home / "intel.rgsnap").exists()


@pytest.mark.parametrize(
    ("arg", "name", "kind"),
    [
        ("/data/GeoIP2-City.mmdb", "geoip2-city", "path"),
        ("corp=/data/x.csv", "corp", "path"),
        ("https://example.invalid/dl/IPinfo_Lite.mmdb.gz", "ipinfo-lite", "url"),
        ("file:///srv/ranges.csv", "ranges", "url"),
    ],
)
def test_parse_from(arg: str, name: str, kind: str) -> None:
    spec = parse_from(arg)
    assert (spec.name, spec.kind, spec.user) == (name, kind, True)


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("", "give a path"),
        ("x=", "give a path"),
        ("ftp://h/x.mmdb", "unsupported URL scheme"),
        ("bad name!=/x.mmdb", "may only hold"),
    ],
)
def test_parse_from_rejects(arg: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        parse_from(arg)


def test_npm_version_dates() -> None:
    assert inst._npm_date("2.3.2026061719") == "2026-06-17"
    assert inst._npm_date("1.0.0") is None
    assert inst._npm_date("2.3.2026139919") is None
