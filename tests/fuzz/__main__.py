"""Run the fuzz targets for a long time: `python -m tests.fuzz --hours 2`.

Rounds of `pytest tests/fuzz` with RELAY_FUZZ_SCALE raised (each target tries that many
times its CI budget) and a fresh Hypothesis seed each round, until the time is up or a
target fails (then the failing example is printed, Hypothesis keeps it in .hypothesis/
so the next plain `pytest tests/fuzz` replays it, and the exit status is 1).

    python -m tests.fuzz --hours 2                 # everything, 2 hours
    python -m tests.fuzz --minutes 10 -k smpp      # only the SMPP targets
    python -m tests.fuzz --hours 8 --scale 500     # longer rounds
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz")
    ap.add_argument("--hours", type=float, default=0.0)
    ap.add_argument("--minutes", type=float, default=0.0)
    ap.add_argument("--scale", type=float, default=100.0,
                    help="examples per round, as a multiple of the CI budget (default 100)")
    ap.add_argument("-k", default="", help="only targets matching this pytest expression")
    a = ap.parse_args(argv)
    budget = a.hours * 3600 + a.minutes * 60 or 600.0
    deadline = time.monotonic() + budget
    env = dict(os.environ, RELAY_FUZZ_SCALE=str(a.scale))
    rounds = 0
    while (left := deadline - time.monotonic()) > 5:
        rounds += 1
        seed = random.randrange(2**32)
        cmd = [sys.executable, "-m", "pytest", str(HERE), "-x", "-q", "-p", "no:cacheprovider",
               f"--hypothesis-seed={seed}", "-o", "timeout=0"]
        if a.k:
            cmd += ["-k", a.k]
        sys.stdout.write(f"fuzz round {rounds}: seed {seed}, scale {a.scale:g}, "
                         f"{left / 60:.0f} min left\n")
        sys.stdout.flush()
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=env, timeout=left, check=False)
        except subprocess.TimeoutExpired:
            break  # time is up mid-round: nothing failed so far
        if done.returncode not in (0, 5):  # 5: -k matched nothing
            sys.stdout.write(f"fuzz: a target failed in round {rounds} (seed {seed})\n")
            return 1
    sys.stdout.write(f"fuzz: {rounds} round(s), nothing found\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
