"""`python -m loadtest replay|profile ...`: replay exported call records or a rate
profile against a switch (see loadtest/run.py); `python -m loadtest <benchmark>`: each
benchmark prints its figures and writes JSON under loadtest/out/."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

COMMANDS = {"replay": "main_replay", "profile": "main_profile"}  # in loadtest.run
BENCHMARKS = {
    "axe": "loadtest.bench_axe",
    "bindings": "loadtest.bench_bindings",
    "events": "loadtest.bench_events",
    "media": "loadtest.bench_media",
    "policy": "loadtest.bench_policy",
    "sip": "loadtest.bench_sip",
    "sms": "loadtest.bench_sms",
    "workers": "loadtest.bench_workers",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        from . import run

        return int(getattr(run, COMMANDS[args[0]])(args[1:]))
    ap = argparse.ArgumentParser(prog="loadtest", description=__doc__)
    ap.add_argument("benchmark", choices=sorted([*BENCHMARKS, *COMMANDS]))
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    import importlib

    mod = importlib.import_module(BENCHMARKS[a.benchmark])
    return int(mod.main(a.args))


if __name__ == "__main__":
    sys.exit(main())
