"""rtpengine as a child process: the daemon the tests, the benchmarks and a one-machine
setup run beside the relay (the backend itself, `relay.media.rtpengine`, only speaks ng
to a daemon wherever it runs)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from relay.media.ng import NgClient, NgError

__all__ = ["RtpengineDaemon"]


class RtpengineDaemon:
    """rtpengine in userspace (no kernel module) on loopback, in the foreground.

    Flags: `--table=-1` (no kernel forwarding table, so no module is needed),
    `--interface`, `--listen-ng`, `--port-min/--port-max`, `--foreground`,
    `--log-stderr`, and `--recording-dir` + `--recording-method=pcap`
    + `--recording-format=raw` when `recording_dir` is given, `--dtmf-log-dest`
    when `dtmf_log_dest` is (the backend's `dtmf_addr`).

    `--config-file=none`: nothing comes from the host's /etc/rtpengine/rtpengine.conf.
    Debian's has `listen-cli = localhost:2224` and `listen-http = localhost:2225`
    (TCP), so with it only one daemon could run per host: a second one (another test,
    a benchmark) exited at once with status 255 ("Failed to open CLI connection port
    (127.0.0.1:2224): Address already in use").
    """

    def __init__(self, ng_port: int, port_range: tuple[int, int], *,
                 interface: str = "127.0.0.1", recording_dir: Path | None = None,
                 log_path: Path | None = None, threads: int = 2,
                 binary: str | None = None, extra: Sequence[str] = (),
                 dtmf_log_dest: tuple[str, int] | None = None) -> None:
        """Build the command line; `start` runs it."""
        exe = binary or shutil.which("rtpengine")
        if exe is None:
            raise FileNotFoundError("rtpengine is not installed (Debian: rtpengine-daemon)")
        self.ng_addr = (interface, ng_port)
        self.port_range = port_range
        self.args = [
            exe, "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
            f"--interface={interface}",
            f"--listen-ng={interface}:{ng_port}", f"--port-min={port_range[0]}",
            f"--port-max={port_range[1]}", f"--num-threads={threads}", "--delete-delay=0",
            "--log-level=5", *extra,
        ]
        if recording_dir is not None:
            self.args += [f"--recording-dir={recording_dir}", "--recording-method=pcap",
                          "--recording-format=raw"]
        if dtmf_log_dest is not None:
            host, port = dtmf_log_dest
            self.args.append(f"--dtmf-log-dest={f'[{host}]' if ':' in host else host}:{port}")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """True if the rtpengine binary is on PATH."""
        return shutil.which("rtpengine") is not None

    async def start(self, wait: float = 10.0) -> None:
        """Start rtpengine and wait until it answers ng `ping`."""
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        if self.log_path:
            cast(Any, out).close()  # the child has its own descriptor
        client = NgClient(self.ng_addr, timeout=0.2, retries=0)
        await client.connect()
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rtpengine exited with {self.proc.returncode}")
                try:
                    await client.request({"command": "ping"})
                    return
                except NgError:
                    await asyncio.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError("rtpengine did not answer ping")

    def stop(self) -> None:
        """Terminate (SIGTERM) and reap; kill after 5 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
