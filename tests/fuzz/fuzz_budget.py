"""How hard the fuzz targets try: a short pass by default (the CI suite), scaled up by
RELAY_FUZZ_SCALE for long runs (`python -m tests.fuzz --hours 2` sets it)."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

SCALE = max(0.01, float(os.environ.get("RELAY_FUZZ_SCALE", "1")))


def fuzz_settings(examples: int, **extra: Any) -> Any:
    """Hypothesis settings for `examples` examples (times RELAY_FUZZ_SCALE)."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture],
                    **extra)


def mutate(data: bytes, draw: Any, tokens: list[bytes]) -> bytes:
    """A few byte flips, insertions, deletions, token splices and truncations of `data`."""
    from hypothesis import strategies as st

    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "token", "truncate", "dup"]))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and pos < len(buf):
            buf[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos:pos + draw(st.integers(1, 16))]
        elif op == "token":
            buf[pos:pos] = draw(st.sampled_from(tokens))
        elif op == "truncate":
            del buf[pos:]
        elif op == "dup" and buf:
            end = min(len(buf), pos + draw(st.integers(1, 64)))
            buf[pos:pos] = buf[pos:end]
    return bytes(buf)
