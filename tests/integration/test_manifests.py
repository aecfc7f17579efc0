"""Tamper evidence: sealed manifests chained per day, and `relay recordings verify` over
real finished call folders with files altered, removed, and manifests forged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from test_recordings_api import make_call

from recordings.manifest import CHAIN, MANIFEST, seal, verify_day
from recordings.retention import sweep

KEY, OLD, OTHER = b"manifest-key-0123456789", b"old-manifest-key-012345", b"x" * 20


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _sealed_day(root: Path, n: int, when: float, key: bytes = KEY) -> list[Path]:
    folders = []
    for i in range(n):
        r = make_call(root, f"call-{i}", when + i, packets=5)
        seal(r.directory, key, when + i + 1)
        folders.append(r.directory)
    return folders


def test_an_intact_day_verifies_and_rotation_keeps_it(tmp_path: Path) -> None:
    now = time.time()
    folders = _sealed_day(tmp_path, 3, now, key=OLD)
    report = verify_day(tmp_path, _day(now), (KEY, OLD))  # rotated: the old key verifies
    assert report.ok and report.checked == 3 and report.first_break is None
    doc = json.loads((folders[1] / MANIFEST).read_text())
    assert doc["seq"] == 2 and len(doc["prev"]) == 64 and set(doc["files"]) == {
        "caller", "callee", "mix"}
    assert seal(folders[1], KEY, now) == doc  # sealing twice changes nothing
    assert len((folders[0].parent / CHAIN).read_text().splitlines()) == 3
    assert not verify_day(tmp_path, _day(now), (OTHER,)).ok  # a key nobody used


def test_altered_and_removed_files_are_the_first_break(tmp_path: Path) -> None:
    now = time.time()
    folders = _sealed_day(tmp_path, 4, now)
    wav = folders[2] / "callee.wav"
    data = bytearray(wav.read_bytes())
    data[100] ^= 0xFF  # one byte, same size
    wav.write_bytes(bytes(data))
    (folders[3] / "mix.wav").unlink()
    report = verify_day(tmp_path, _day(now), (KEY,))
    assert not report.ok
    assert report.first_break == {"seq": 3, "call_id": "call-2",
                                  "problem": "callee.wav altered (size or SHA-256 differs)"}
    assert report.problems[1]["problem"] == "mix.wav missing"


def test_forged_manifests_and_holes(tmp_path: Path) -> None:
    now = time.time()
    folders = _sealed_day(tmp_path, 4, now)
    # Someone edits a file *and* its manifest's SHA-256: the manifest's hash and
    # signature no longer hold.
    m = folders[1] / MANIFEST
    doc = json.loads(m.read_text())
    doc["files"]["mix"]["size"] += 1
    m.write_text(json.dumps(doc))
    # A whole call removed: a hole in the chain.
    shutil.rmtree(folders[3])
    # A call slipped in with a manifest of its own making (signed with another key).
    extra = make_call(tmp_path, "call-x", now + 9, packets=5)
    (extra.directory / MANIFEST).write_text(json.dumps({"v": 1, "call_id": "call-x"}))
    report = verify_day(tmp_path, _day(now), (KEY,))
    problems = [(p["call_id"], p["problem"]) for p in report.problems]
    assert problems == [("call-1", "manifest altered (its hash is not the chain's)"),
                        ("call-3", "call folder missing"),
                        ("call-x", "manifest not in the day's chain")]
    assert report.first_break is not None and report.first_break["call_id"] == "call-1"


def test_cli_verify_and_retention_of_a_whole_day(tmp_path: Path) -> None:
    now = time.time()
    folders = _sealed_day(tmp_path, 2, now)
    unsealed = make_call(tmp_path, "call-u", now + 5, packets=5)
    conf = tmp_path / "relay.toml"
    conf.write_text('[recordings]\nmanifest_keys = ["manifest-key-0123456789"]\n')
    cmd = [sys.executable, "-m", "relay", "recordings", "--config", str(conf), "verify",
           "--recordings", str(tmp_path), "--date", _day(now), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["ok"] and body["checked"] == 2 and body["unsealed"] == [unsealed.call_id]
    (folders[0] / "caller.wav").write_bytes(b"RIFF")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert json.loads(out.stdout)["first_break"]["call_id"] == "call-0"
    human = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=60)
    assert human.returncode == 1 and "BROKEN" in human.stdout and "call-0" in human.stdout
    # Retention that takes every call of the day takes its chain too.
    old = tmp_path / "old"
    day_folders = _sealed_day(old, 2, now - 40 * 86400)
    for f in [*day_folders, *(p for d in day_folders for p in d.iterdir())]:
        os.utime(f, (now - 40 * 86400,) * 2)
    assert sweep(old, 30, now) == 2
    assert not day_folders[0].parent.exists()


def test_sealing_reads_the_chain_tail_and_survives_a_torn_line(tmp_path: Path) -> None:
    """Sealing reads only the end of a day's chain (it was quadratic in the day's calls):
    links far past the tail reader's first 4 KiB window continue the sequence, and a line
    torn by a crash mid-append is reported by verify, not repeated or built upon."""
    now = time.time() // 86400 * 86400 + 3600  # 01:00 UTC: 71 s of calls in one day
    folders = _sealed_day(tmp_path, 60, now)  # about 6 KiB of chain
    chain = folders[0].parent / CHAIN
    assert chain.stat().st_size > 4096
    with open(chain, "a") as f:
        f.write('{"seq": 61, "call_id": "torn-')  # a crash mid-append
    nxt = make_call(tmp_path, "call-after", now + 70, packets=5)
    doc = seal(nxt.directory, KEY, now + 71)
    last = json.loads(chain.read_text().splitlines()[-1])
    assert doc["seq"] == 61 and last["call_id"] == "call-after" and last["seq"] == 61
    assert doc["prev"] == json.loads(chain.read_text().splitlines()[59])["sha256"]
    report = verify_day(tmp_path, _day(now), (KEY,))
    assert report.checked == 61
    assert [p["problem"] for p in report.problems] == ["chain line 61 is torn (not JSON)"]


def test_a_batch_seals_in_order_with_one_chain_append(tmp_path: Path) -> None:
    """seal_many: the calls of a batch chain in the order given, one already sealed is
    returned as it was, a missing folder is an error of its own and breaks nothing."""
    from recordings.manifest import seal_many

    now = time.time() // 86400 * 86400 + 7200
    first = _sealed_day(tmp_path, 2, now)
    more = [make_call(tmp_path, f"call-b{i}", now + 10 + i, packets=5).directory
            for i in range(3)]
    before = json.loads((first[1] / MANIFEST).read_text())
    results = seal_many([more[0], first[1], tmp_path / "gone", more[1], more[2]], KEY, now + 20)
    assert results[1] == before
    assert isinstance(results[2], FileNotFoundError)
    assert [r["seq"] for r in (results[0], results[3], results[4])] == [3, 4, 5]
    links = [json.loads(line) for line in (first[0].parent / CHAIN).read_text().splitlines()]
    assert [link["call_id"] for link in links] == ["call-0", "call-1", "call-b0", "call-b1",
                                                   "call-b2"]
    report = verify_day(tmp_path, _day(now), (KEY,))
    assert report.ok and report.checked == 5
