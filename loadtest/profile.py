"""Rate profiles: steps of call rate over time and what each call does. Pure: no I/O.

A profile is lines (or `;`-separated clauses on the command line); `#` starts a comment:

    ramp 1 20 10s          # 1 -> 20 calls/s over 10 s
    hold 20 30s            # 20 calls/s for 30 s
    spike 60 2s            # 60 calls/s for 2 s
    hold-time exp 20s      # talk time: fixed T | uniform LO HI | exp MEAN
    answer-delay uniform 0.5s 2s
    strangers 5%           # share of calls from a number that is not a party (403)
    frozen 2%              # share of calls to a frozen X (410)
    sms 5                  # SMS per second over SMPP, through the whole run
    bindings 50            # AXB bindings to create (numbers are generated)
    seed 7

Calls are placed evenly within each step (a ramp's rate rises linearly).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from .plan import Attempt, BindingSpec, Plan

__all__ = ["Dist", "Profile", "ProfileError", "Step", "generate", "parse_profile"]


class ProfileError(ValueError):
    """A profile line the parser cannot take, with its line number."""


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # ramp, hold, spike
    start_rate: float
    end_rate: float
    seconds: float

    @property
    def name(self) -> str:
        if self.kind == "ramp":
            return f"ramp {self.start_rate:g}->{self.end_rate:g}/s"
        return f"{self.kind} {self.end_rate:g}/s"

    @property
    def calls(self) -> int:
        return round((self.start_rate + self.end_rate) / 2 * self.seconds)


@dataclass(frozen=True, slots=True)
class Dist:
    """A duration distribution: fixed, uniform or exp (seconds)."""

    kind: str = "fixed"
    a: float = 1.0
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        return self.a


@dataclass(slots=True)
class Profile:
    steps: list[Step] = field(default_factory=list)
    hold_time: Dist = field(default_factory=lambda: Dist("fixed", 1.0))
    answer_delay: Dist = field(default_factory=lambda: Dist("fixed", 0.0))
    strangers: float = 0.0
    frozen: float = 0.0
    sms_rate: float = 0.0
    bindings: int = 20
    seed: int = 1

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


def _seconds(text: str, line: int) -> float:
    t = text.strip().lower()
    scale = 1.0
    if t.endswith("ms"):
        t, scale = t[:-2], 0.001
    elif t.endswith("s"):
        t = t[:-1]
    elif t.endswith("m"):
        t, scale = t[:-1], 60.0
    try:
        v = float(t) * scale
    except ValueError:
        raise ProfileError(f"line {line}: {text!r} is not a duration (10s, 500ms, 2m)") from None
    if v < 0 or not math.isfinite(v):
        raise ProfileError(f"line {line}: duration {text!r} must be >= 0")
    return v


def _number(text: str, line: int, what: str) -> float:
    try:
        v = float(text.rstrip("/s"))
    except ValueError:
        raise ProfileError(f"line {line}: {what} {text!r} is not a number") from None
    if v < 0 or not math.isfinite(v):
        raise ProfileError(f"line {line}: {what} must be >= 0")
    return v


def _share(text: str, line: int) -> float:
    t = text.strip()
    v = _number(t[:-1], line, "share") / 100 if t.endswith("%") else _number(t, line, "share")
    if v > 1:
        raise ProfileError(f"line {line}: a share is at most 100%")
    return v


def _dist(args: list[str], line: int) -> Dist:
    if not args:
        raise ProfileError(f"line {line}: a distribution: fixed T | uniform LO HI | exp MEAN")
    kind = args[0]
    if kind == "fixed" and len(args) == 2:
        return Dist("fixed", _seconds(args[1], line))
    if kind == "uniform" and len(args) == 3:
        lo, hi = _seconds(args[1], line), _seconds(args[2], line)
        if hi < lo:
            raise ProfileError(f"line {line}: uniform needs LO <= HI")
        return Dist("uniform", lo, hi)
    if kind == "exp" and len(args) == 2:
        return Dist("exp", _seconds(args[1], line))
    if len(args) == 1:
        return Dist("fixed", _seconds(kind, line))
    raise ProfileError(f"line {line}: {' '.join(args)!r}: fixed T | uniform LO HI | exp MEAN")


def parse_profile(text: str) -> Profile:
    """Parse a profile (see the module docstring); raises ProfileError naming the line."""
    p = Profile()
    clauses = [c for raw in text.splitlines() for c in raw.split(";")]
    for n, raw in enumerate(clauses, 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        key, args = words[0].lower(), words[1:]
        if key == "ramp":
            if len(args) != 3:
                raise ProfileError(f"line {n}: ramp FROM TO DURATION (calls/s, calls/s, s)")
            p.steps.append(Step("ramp", _number(args[0], n, "rate"),
                                _number(args[1], n, "rate"), _seconds(args[2], n)))
        elif key in ("hold", "spike"):
            if len(args) != 2:
                raise ProfileError(f"line {n}: {key} RATE DURATION")
            r = _number(args[0], n, "rate")
            p.steps.append(Step(key, r, r, _seconds(args[1], n)))
        elif key in ("hold-time", "talk"):
            p.hold_time = _dist(args, n)
        elif key == "answer-delay":
            p.answer_delay = _dist(args, n)
        elif key in ("strangers", "frozen"):
            if len(args) != 1:
                raise ProfileError(f"line {n}: {key} SHARE (5% or 0.05)")
            setattr(p, key, _share(args[0], n))
        elif key == "sms":
            if len(args) != 1:
                raise ProfileError(f"line {n}: sms RATE (messages/s)")
            p.sms_rate = _number(args[0], n, "sms rate")
        elif key in ("bindings", "seed"):
            if len(args) != 1 or not args[0].isdigit():
                raise ProfileError(f"line {n}: {key} N (a whole number)")
            setattr(p, key, int(args[0]))
        else:
            raise ProfileError(f"line {n}: unknown {key!r} (ramp, hold, spike, hold-time, "
                               "answer-delay, strangers, frozen, sms, bindings, seed)")
    if not p.steps:
        raise ProfileError("a profile needs at least one ramp, hold or spike step")
    if p.strangers + p.frozen > 1:
        raise ProfileError("strangers + frozen exceed 100%")
    if p.bindings < 1:
        raise ProfileError("bindings must be >= 1")
    return p


def step_offsets(step: Step, t0: float) -> list[float]:
    """When each call of `step` starts: evenly at the (linearly changing) rate.

    The k-th call starts where the integral of the rate reaches k (k = 0, 1, ...)."""
    n = step.calls
    r0, r1, d = step.start_rate, step.end_rate, step.seconds
    out: list[float] = []
    slope = (r1 - r0) / d if d else 0.0
    for k in range(n):
        if abs(slope) < 1e-12:
            t = k / r0 if r0 else 0.0
        else:  # r0 t + slope t^2 / 2 = k
            t = (-r0 + math.sqrt(max(0.0, r0 * r0 + 2 * slope * k))) / slope
        out.append(t0 + min(t, d))
    return out


def numbers(i: int) -> tuple[str, str, str]:
    """The generated (X, A, B) of binding `i`; their last 8 digits all differ, so a leak
    check on them cannot match the wrong number."""
    return f"+86170{30000000 + i:08d}", f"+86138{10000000 + i:08d}", f"+86139{20000000 + i:08d}"


def generate(p: Profile) -> Plan:
    """The attempts and bindings of a profile (deterministic for its seed)."""
    rng = random.Random(p.seed)
    n_frozen = math.ceil(p.bindings * 0.1) if p.frozen > 0 else 0
    live = max(1, p.bindings - n_frozen)
    bindings = [BindingSpec(*numbers(i)) for i in range(live)]
    bindings += [BindingSpec(*numbers(live + i), frozen=True) for i in range(n_frozen)]
    attempts: list[Attempt] = []
    t0 = 0.0
    k = 0
    for step in p.steps:
        for off in step_offsets(step, t0):
            u = rng.random()
            if u < p.frozen and n_frozen:
                s = bindings[live + rng.randrange(n_frozen)]
                attempts.append(Attempt(off, s.a, s.x, None, 410, step=step.name))
            elif u < p.frozen + p.strangers:
                s = bindings[rng.randrange(live)]
                attempts.append(Attempt(off, f"+86137{40000000 + k:08d}", s.x, None, 403,
                                        step=step.name))
            else:
                s = bindings[rng.randrange(live)]
                by = "caller" if rng.random() < 0.5 else "callee"
                attempts.append(Attempt(off, s.a, s.x, s.b, 200,
                                        answer_delay=p.answer_delay.sample(rng),
                                        talk=p.hold_time.sample(rng), hangup_by=by,
                                        step=step.name))
            k += 1
        t0 += step.seconds
    return Plan(attempts, bindings, [])
