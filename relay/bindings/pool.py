"""The number pool as a node sees it: every virtual number, its area, and how to pick one.

The pool and the table are both in memory, so choosing X costs no round trip; the store's
claims (claims.py) remain the arbiter when two nodes pick the same number at once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from .model import Mode, NumberRecord
from .table import BindingTable

__all__ = ["NumberPool", "PoolStats"]


@dataclass(frozen=True, slots=True)
class PoolStats:
    total: int
    in_use: int
    free: int
    quarantined: int
    by_mode: dict[str, int]
    by_area: dict[str, dict[str, int]]


class NumberPool:
    """All numbers of the pool, grouped by area."""

    def __init__(self) -> None:
        self.numbers: dict[str, NumberRecord] = {}
        self._by_area: dict[str | None, list[str]] = {}
        self._all: list[str] = []

    def __len__(self) -> int:
        return len(self.numbers)

    def __contains__(self, number: object) -> bool:
        return number in self.numbers

    def add(self, rec: NumberRecord) -> None:
        if rec.number in self.numbers:
            return
        self.numbers[rec.number] = rec
        self._by_area.setdefault(rec.area, []).append(rec.number)
        self._all.append(rec.number)

    def replace(self, records: list[NumberRecord]) -> None:
        self.numbers.clear()
        self._by_area.clear()
        self._all.clear()
        for r in records:
            self.add(r)

    def candidates(self, table: BindingTable, mode: Mode, now: float, *, area: str | None,
                   parties: tuple[str, ...] = ()) -> Iterator[str]:
        """Numbers that could serve a new binding, the requested area first.

        Each list is walked from a random point so that nodes creating bindings at the
        same moment rarely race for the same number.
        """
        seen_area = area is not None and area in self._by_area
        lists = [self._by_area[area]] if seen_area else []
        lists.append(self._all)
        tried: set[str] = set()
        for numbers in lists:
            n = len(numbers)
            if not n:
                continue
            start = random.randrange(n)
            for i in range(n):
                x = numbers[(start + i) % n]
                if x in tried:
                    continue
                tried.add(x)
                if x in parties:
                    continue
                if self._fits(table, x, mode, now, parties):
                    yield x

    @staticmethod
    def _fits(table: BindingTable, x: str, mode: Mode, now: float,
              parties: tuple[str, ...]) -> bool:
        use = table.usage(x)
        if use is None:
            return table.quarantine.get(int(x[1:]), 0.0) <= now
        used_mode, _count = use
        if mode is Mode.AXN or used_mode is not mode:
            return False
        if mode is Mode.AXB:
            return not any(table.pair_taken(x, p) for p in parties)
        return True  # AXE: the extension is chosen afterwards

    def stats(self, table: BindingTable, now: float) -> PoolStats:
        by_mode: dict[str, int] = {}
        by_area: dict[str, dict[str, int]] = {}
        in_use = quarantined = 0
        for x, rec in self.numbers.items():
            area = by_area.setdefault(rec.area or "", {"total": 0, "in_use": 0})
            area["total"] += 1
            use = table.usage(x)
            if use is not None:
                in_use += 1
                area["in_use"] += 1
                by_mode[use[0].value] = by_mode.get(use[0].value, 0) + 1
            elif table.quarantine.get(int(x[1:]), 0.0) > now:
                quarantined += 1
        total = len(self.numbers)
        return PoolStats(total=total, in_use=in_use, free=total - in_use - quarantined,
                         quarantined=quarantined, by_mode=by_mode, by_area=by_area)
