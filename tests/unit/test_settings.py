"""relay.toml's declared sections (relay/settings.py): unknown keys, wrong types, nested
tables, defaults and hidden secrets, through `load_config` as `relay serve` reads it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from relay.config import Config, ConfigError, load_config
from relay.settings import (
    SECRET,
    Sections,
    SipSection,
    describe,
    effective,
    load_sections,
    to_toml,
)


def _load(tmp_path: Path, text: str) -> Config:
    f = tmp_path / "relay.toml"
    f.write_text(text)
    return load_config(str(f), env={})


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ("[sip]\nsesion_expires = 60\n",
     "[sip] sesion_expires: unknown key (did you mean session_expires?)"),
    ("[recordings]\nretention_day = 30\n",
     "[recordings] retention_day: unknown key (did you mean retention_days?)"),
    ("[events]\nurls = 'x'\n", "[events] urls: unknown key (did you mean url?)"),
    ("[relay]\nstroe = 'x'\n", "[relay] stroe: unknown key (did you mean store?)"),
    ("[sipp]\nt1 = 1\n", "[sipp]: unknown section (did you mean sip?)"),
    ("[guard]\nzzz = 1\n", "[guard] zzz: unknown key"),
])
def test_unknown_keys_and_sections_are_named(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message


@pytest.mark.parametrize(("text", "message"), [
    ('[sip]\nsession_expires = "1800"\n',
     "[sip] session_expires: expected an integer, got string"),
    ("[sip]\nmax_calls = 10.5\n", "[sip] max_calls: expected an integer, got number"),
    ('[sip]\nno_early_media = "10.0.0.0/8"\n',
     "[sip] no_early_media: expected a list, got string"),
    ("[sip]\nsymmetric = [1]\n", "[sip] symmetric: expected a string, got integer"),
    ('[sip]\nhangup_on_freeze = "yes"\n',
     "[sip] hangup_on_freeze: expected true or false, got string"),
    ("[media]\ntimeout = true\n", "[media] timeout: expected a number, got boolean"),
    ("[smpp]\nupstream = 1\n", "[smpp] upstream: expected a table, got integer"),
    ("[sip]\ntrunk = { host = 'h' }\n", "[sip] trunk: expected a list, got table"),
    ("[guard]\ndigits = 3\n", "[guard] digits: must be 6 to 15, got 3"),
    ("[sip]\nrate_limit = -1\n", "[sip] rate_limit: must be at least 0, got -1"),
    ("[media]\nbackend = 'kernel'\n",
     "[media] backend: one of inprocess, rtpengine, got 'kernel'"),
    ("[events]\nbackoff = 0\n", "[events] backoff: must be more than 0, got 0.0"),
    ("sip = 1\n", "[sip]: expected a table, got integer"),
])
def test_wrong_types_and_ranges_are_named(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message


def test_nested_tables(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[[sip.trunk]]
name = "a"
host = "192.0.2.1"
port = 5060
priority = 1
[[sip.trunk]]
host = "carrier.example"
weight = 5
[sip.trunk_auth_realms]
"carrier.example" = { user = "u2", password = "p2" }
[smpp.upstream]
host = "127.0.0.1"
port = 2775
system_id = "relay"
""")
    sip = cfg.sections.sip
    assert [t.name for t in sip.trunk] == ["a", None]
    assert sip.trunk[1].host == "carrier.example" and sip.trunk[1].weight == 5
    assert sip.trunk_auth_realms["carrier.example"].password == "p2"
    up = cfg.sections.smpp.upstream
    assert up is not None and up.port == 2775 and up.password == ""
    for text, message in [
        ("[[sip.trunk]]\nhost = 'h'\nprt = 1\n",
         "[[sip.trunk]] prt: unknown key (did you mean port?)"),
        ("[[sip.trunk]]\nport = 5060\n", "[[sip.trunk]] host: missing (required)"),
        ("[[sip.trunk]]\nhost = 'h'\nport = 70000\n",
         "[[sip.trunk]] port: must be 1 to 65535, got 70000"),
        ("[[sip.trunk]]\nhost = 'h'\n[[sip.trunk]]\nhost = 'h'\n",
         "[[sip.trunk]] #2: duplicate trunk name 'h:5060'"),
        ("[smpp.upstream]\nhost = 'h'\nport = 1\nsystem_id = 's'\npasswd = 'x'\n",
         "[smpp.upstream] passwd: unknown key (did you mean password?)"),
        ("[smpp.upstream]\nhost = 'h'\n", "[smpp.upstream] port: missing (required)"),
        ("[sip.trunk_auth_realms]\nr = { user = 'u' }\n",
         "[sip.trunk_auth_realms] password: missing (required)"),
        ("[sip]\ntrunk_auth_user = 'u'\n",
         "[sip] trunk_auth_user and trunk_auth_password go together"),
        ("[sms]\nroute = 'upstream'\n", "[sms] route = 'upstream' needs [smpp.upstream]"),
    ]:
        assert _error(tmp_path, text) == message, text


def test_defaults_match_the_code_and_the_file(tmp_path: Path) -> None:
    # No file, an empty file and Config() agree: the schema's defaults are the code's.
    assert load_config(None, env={}) == Config()
    assert _load(tmp_path, "") == Config()
    s = Sections()
    assert (s.sip.session_expires, s.sip.min_se, s.sip.rate_limit, s.sip.tcp) == \
        (1800, 90, 40, True)
    assert (s.sms.retry_window, s.events.link_ttl, s.guard.digits,
            s.workers.kamailio_children, s.media.timeout) == (3600.0, 7200, 8, 4, 60.0)
    # An int where a float is declared is read as that float; set keys keep their value.
    cfg = _load(tmp_path, "[sip]\nring_timeout = 5\n[api]\nrate = { ops = 2 }\n")
    assert cfg.sections.sip.ring_timeout == 5.0
    assert isinstance(cfg.sections.sip.ring_timeout, float)
    assert cfg.sections.sip.max_calls == 5000
    assert cfg.api_rates == {"admin": 0.0, "ops": 2.0}


def test_every_key_is_documented() -> None:
    rows = describe()
    assert len(rows) > 100
    undocumented = [f"{where} {key}" for where, key, _, _, doc in rows if not doc]
    assert undocumented == []
    # Every key the README's Configuration section shows is declared.
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    declared = {(w.strip("[]"), k) for w, k, *_ in rows}
    section = ""
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section:
            key = line.split("=", 1)[0].strip()
            assert (section, key) in declared, (section, key)


def test_secrets_are_hidden(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[api]
tokens = { "tok-admin-XYZ" = "admin", "tok-ops-XYZ" = "ops" }
[dialplan]
hook_url = "http://127.0.0.1:1/h"
hook_secret = "hook-XYZ"
[sip]
trunk_auth_user = "relay"
trunk_auth_password = "pw-XYZ"
trunk_auth_realms = { r = { user = "u2", password = "realm-XYZ" } }
[sms]
route = "webhook"
webhook_url = "http://127.0.0.1:1/sms"
webhook_secret = "sms-XYZ"
[smpp]
accounts = { gw1 = "gw-XYZ" }
[smpp.upstream]
host = "127.0.0.1"
port = 2775
system_id = "relay"
password = "up-XYZ"
[events]
url = "http://127.0.0.1:1/e"
secret = "events-XYZ-secret"
[recordings]
link_keys = ["link-key-XYZ-0123456789"]
manifest_keys = ["manifest-XYZ-0123456789"]
""")
    data = effective(cfg)
    text = json.dumps(data) + to_toml(data)
    assert "XYZ" not in text
    assert data["api"]["tokens"] == [f"{SECRET}:admin", f"{SECRET}:ops"]
    assert data["smpp"]["accounts"] == {"gw1": SECRET}
    assert data["sip"]["trunk_auth_user"] == "relay"  # not a secret
    assert data["sip"]["trunk_auth_realms"]["r"] == {"user": "u2", "password": SECRET}
    assert data["events"]["url"] == "http://127.0.0.1:1/e"
    # Flags (here as Config overrides) are what show reports, not the file.
    moved = dataclasses.replace(cfg, sip=("127.0.0.1", 5999))
    assert effective(moved)["relay"]["sip"] == "127.0.0.1:5999"


def test_shown_toml_reloads_without_secrets(tmp_path: Path) -> None:
    # What `config show` prints for a secret-free file is itself a valid relay.toml.
    cfg = _load(tmp_path, "[sip]\nsession_expires = 600\n[[sip.trunk]]\nhost = 'h'\n")
    data = effective(cfg)
    del data["api"]["tokens"]
    again = _load(tmp_path, to_toml(data))
    assert again.sections.sip == cfg.sections.sip
    assert again.sections == cfg.sections


def test_sections_are_frozen() -> None:
    s = load_sections({"sip": {"t1": 0.25}})
    assert isinstance(s.sip, SipSection) and s.sip.t1 == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.sip.t1 = 1.0  # type: ignore[misc]
