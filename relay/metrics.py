"""A small Prometheus text-format registry (counters and gauges, labels as tuples).

prometheus_client would do, but the relay needs two metric kinds and no process
collectors, and the hot path must only bump a dict entry.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Metrics"]


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters are bumped in place, or read from a callable when a core keeps its own
    count; gauges are always read from callables when scraped."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]] = {}
        self._read: dict[str, tuple[str, str, Callable[[], float]]] = {}  # name -> type, help

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()
                ) -> dict[tuple[str, ...], float]:
        """The value dict of a counter; bump with `c[key] = c.get(key, 0) + 1`."""
        if name not in self._counters:
            self._counters[name] = (help_text, labels, {})
        return self._counters[name][2]

    def inc(self, name: str, *label_values: str, by: float = 1.0) -> None:
        values = self._counters[name][2]
        values[label_values] = values.get(label_values, 0.0) + by

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._read[name] = ("gauge", help_text, read)

    def counter_from(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A counter whose value a sans-IO core keeps (it only ever grows)."""
        self._read[name] = ("counter", help_text, read)

    def render(self) -> str:
        out: list[str] = []
        for name, (help_text, labels, values) in sorted(self._counters.items()):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} counter")
            if not values and not labels:
                out.append(f"{name} 0")
            for key, v in sorted(values.items()):
                out.append(f"{name}{_labels(labels, key)} {v:g}")
        for name, (kind, help_text, read) in sorted(self._read.items()):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.append(f"{name} {float(read()):g}")
        return "\n".join(out) + "\n"
