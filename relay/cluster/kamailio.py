"""Kamailio as the dispatcher of `relay serve --workers N`: where it is, and how to run
`deploy/kamailio/relay-dispatcher.cfg` (the same file operators use on their own) with
the set's addresses."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CONFIG", "KamailioNotFound", "command", "find_kamailio", "write_list"]

# The configuration ships in the source tree beside the package (deploy/kamailio/).
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio" / "relay-dispatcher.cfg"
# Debian and Ubuntu put the modules under the multiarch triplet; others under lib or lib64.
_MODULE_DIRS = ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules",
                "/usr/lib64/kamailio/modules", "/usr/local/lib64/kamailio/modules",
                "/usr/local/lib/kamailio/modules")


class KamailioNotFound(RuntimeError):
    """Kamailio (or its dispatcher module) is not installed."""


def find_kamailio() -> tuple[str, str]:
    """The kamailio executable and a module directory holding dispatcher.so."""
    exe = shutil.which("kamailio") or shutil.which("kamailio",
                                                    path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        raise KamailioNotFound("kamailio is not installed (Debian: apt-get install kamailio)")
    for pattern in _MODULE_DIRS:
        for path in sorted(glob.glob(pattern)):
            if os.path.exists(os.path.join(path, "dispatcher.so")):
                return exe, path
    raise KamailioNotFound("kamailio's dispatcher module (dispatcher.so) was not found")


def write_list(path: Path, nodes: Sequence[tuple[str, int]]) -> None:
    """dispatcher.list: every node in set 1 (`SETID URI`), in worker order."""
    lines = ["# set  destination  (written by relay serve --workers)"]
    lines += [f"1 sip:{_host(h)}:{p}" for h, p in nodes]
    path.write_text("\n".join(lines) + "\n")


#: Shared memory (MB) for transactions: each INVITE and BYE lives in it (with its
#: message and replies cloned) until its wait timer ends, about 5 s after its final
#: reply. At 64 MB Kamailio ran out at 600 calls/s ("500 No error", `new_t(): out of
#: mem`); 1,500 calls/s needs about 150 MB. Address space until touched.
SHM_MB = 1024


def command(exe: str, mpath: str, rundir: Path, sip: tuple[str, int], ds_list: Path,
            trunks: Sequence[str], *, ping_interval: int = 1, children: int = 4,
            config: Path = CONFIG) -> list[str]:
    """The argv that runs Kamailio in the foreground (-DD), logging to stderr (-E), with
    its runtime files under `rundir`."""
    host, port = sip
    h = _host(host)
    defines = {"LISTEN_UDP": f"udp:{h}:{port}", "LISTEN_TCP": f"tcp:{h}:{port}",
               "DS_LIST": f'"{ds_list}"', "TRUNKS": '"' + ",".join(trunks) + '"',
               "PING_INTERVAL": str(ping_interval), "CHILDREN": str(children)}
    argv = [exe, "-f", str(config), "-DD", "-E", "-L", mpath, "-Y", str(rundir),
            "-w", str(rundir), "-m", str(SHM_MB), "-M", "8"]
    for k, v in defines.items():
        argv += ["-A", f"{k}={v}"]
    return argv


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
