from __future__ import annotations

from pathlib import Path

import pytest

from regiongate.config import load_settings
from regiongate.errors import ConfigError


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path))
    s = load_settings(env={})
    assert s.server.listen == "127.0.0.1:8080" and s.server.upstream is None
    assert s.server.trusted_proxies == ["127.0.0.1/32", "::1/128"]
    assert s.policy.source == "api-2024"
    assert s.store_url() == f"sqlite:///{tmp_path / 'regiongate.db'}"


def test_file_env_and_flags_in_order(tmp_path: Path) -> None:
    cfg = tmp_path / "regiongate.toml"
    cfg.write_text(
        '[server]\nlisten = "0.0.0.0:9000"\nupstream = "http://api:8000"\n'
        'trusted_proxies = ["10.0.0.0/8"]\n[policy]\nsource = "sanctions-comprehensive"\n'
        '[store]\nurl = "postgresql://db/test"\n'
    )
    s = load_settings(cfg, env={})
    assert s.server.listen == "0.0.0.0:9000" and s.server.trusted_proxies == ["10.0.0.0/8"]
    assert s.store_url() == "postgresql://db/test"
    env = {
        "REGIONGATE_SERVER_LISTEN": "127.0.0.1:9100",
        "REGIONGATE_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16",
        "REGIONGATE_SERVER_HOP_LIMIT": "4",
        "REGIONGATE_POLICY_WATCH": "false",
    }
    s = load_settings(cfg, env=env)
    assert s.server.listen == "127.0.0.1:9100" and s.server.hop_limit == 4
    assert s.server.trusted_proxies == ["10.0.0.0/8", "192.168.0.0/16"]
    assert s.policy.watch is False and s.policy.source == "sanctions-comprehensive"
    s = load_settings(
        cfg, env=env, overrides={"server": {"listen": "127.0.0.1:9200", "upstream": None}}
    )
    assert s.server.listen == "127.0.0.1:9200"
    assert s.server.upstream == "http://api:8000"  # None in overrides means "not given"
    env_json = {
        "REGIONGATE_SERVER_TRUSTED_PROXIES": '["172.16.0.0/12"]',
        "REGIONGATE_CONFIG": str(cfg),
    }
    s = load_settings(env=env_json)
    assert s.server.trusted_proxies == ["172.16.0.0/12"] and s.server.upstream == "http://api:8000"


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("[server]\nlisten = 8080\n", {}, r"server\.listen: Expected `str`, got `int`"),
        ('[server]\nlisten = "nohost"\n', {}, r"server\.listen: 'nohost' is not HOST:PORT"),
        ('[server]\nlistn = "x"\n', {}, "Object contains unknown field `listn`"),
        ('[server]\nupstream = "ftp://x"\n', {}, "must be an http"),
        (
            '[server]\ntrusted_proxies = ["10.0.0.0/33"]\n',
            {},
            r"server\.trusted_proxies: '10.0.0.0/33'",
        ),
        (
            '[server]\nforwarded_header = "x-real-ip"\n',
            {},
            "must be 'x-forwarded-for' or 'forwarded'",
        ),
        ("[server]\nhop_limit = 0\n", {}, "outside 1-64"),
        ("[sever]\n", {}, "unknown field `sever`"),
        ("not toml [", {}, "not valid TOML"),
        ("", {"REGIONGATE_SERVER_HOP_LIMIT": "many"}, r"server\.hop_limit: Expected `int`"),
        (
            "",
            {"REGIONGATE_SERVER_LISTN": "x"},
            "REGIONGATE_SERVER_LISTN: server has no key 'listn'",
        ),
        ("", {"REGIONGATE_SERVER_TRUSTED_PROXIES": "[bad json"}, "not a JSON array"),
    ],
)
def test_bad_configuration_names_the_key(
    tmp_path: Path, text: str, env: dict[str, str], match: str
) -> None:
    cfg = tmp_path / "regiongate.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(cfg, env=env)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings("/nonexistent/regiongate.toml", env={})
