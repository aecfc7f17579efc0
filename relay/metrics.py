"""A small Prometheus text-format registry: counters, gauges, histograms, an info gauge
and the standard process metrics, rendered in the text exposition format 0.0.4.

prometheus_client would do, but the hot path must only bump a dict entry, and the
relay needs no more than these kinds (the tests parse the output with its parser).
"""

from __future__ import annotations

import bisect
import os
import resource
from collections.abc import Callable, Sequence

__all__ = ["CONTENT_TYPE", "Histogram", "Metrics"]

#: The standard content type of the Prometheus text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    return "+Inf" if v == float("inf") else repr(float(v))  # le="30.0", as client libraries write


class Histogram:
    """Cumulative buckets (upper bounds in seconds, +Inf added), a sum and a count,
    per label values."""

    def __init__(self, help_text: str, buckets: Sequence[float],
                 labels: tuple[str, ...] = ()) -> None:
        self.help = help_text
        self.bounds = sorted(buckets)
        self.labels = labels
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *label_values: str) -> None:
        """Count one observation."""
        series = self._series.get(label_values)
        if series is None:
            series = self._series[label_values] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect.bisect_left(self.bounds, value)] += 1
        series[1][0] += value

    def render(self, name: str) -> list[str]:
        out = [f"# HELP {name} {self.help}", f"# TYPE {name} histogram"]
        series = self._series or ({(): ([0] * (len(self.bounds) + 1), [0.0])}
                                  if not self.labels else {})
        for key, (counts, total) in sorted(series.items()):
            running = 0
            for bound, n in zip([*self.bounds, float("inf")], counts, strict=True):
                running += n
                names, values = (*self.labels, "le"), (*key, _num(bound))
                out.append(f"{name}_bucket{_labels(names, values)} {running}")
            out.append(f"{name}_sum{_labels(self.labels, key)} {total[0]:g}")
            out.append(f"{name}_count{_labels(self.labels, key)} {running}")
        return out


class Metrics:
    """Counters are bumped in place, or read from a callable when a core keeps its own
    count; gauges are always read from callables when scraped."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]] = {}
        self._read: dict[str, tuple[str, str, Callable[[], float]]] = {}  # name -> type, help
        self._histograms: dict[str, Histogram] = {}
        self._info: dict[str, tuple[str, dict[str, str]]] = {}
        # name -> help, label names, a reader of {label values: value}
        self._families: dict[str, tuple[str, tuple[str, ...],
                                        Callable[[], dict[tuple[str, ...], float]]]] = {}

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

    def gauges(self, name: str, help_text: str, labels: tuple[str, ...],
               read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        """A gauge per label values, all read from one callable when scraped."""
        self._families[name] = (help_text, labels, read)

    def counter_from(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A counter whose value a sans-IO core keeps (it only ever grows)."""
        self._read[name] = ("counter", help_text, read)

    def histogram(self, name: str, help_text: str, buckets: Sequence[float],
                  labels: tuple[str, ...] = ()) -> Histogram:
        """A histogram (created once; later calls return the same one)."""
        if name not in self._histograms:
            self._histograms[name] = Histogram(help_text, buckets, labels)
        return self._histograms[name]

    def info(self, name: str, help_text: str, labels: dict[str, str]) -> None:
        """A gauge fixed at 1 whose labels carry facts (`relay_build_info{version=...}`)."""
        self._info[name] = (help_text, labels)

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
        for name, (help_text, labels, read_all) in sorted(self._families.items()):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} gauge")
            for key, v in sorted(read_all().items()):
                out.append(f"{name}{_labels(labels, key)} {float(v):g}")
        for name, hist in sorted(self._histograms.items()):
            out += hist.render(name)
        for name, (help_text, info) in sorted(self._info.items()):
            keys = tuple(sorted(info))
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} gauge")
            out.append(f"{name}{_labels(keys, tuple(info[k] for k in keys))} 1")
        out += _process_metrics()
        return "\n".join(out) + "\n"


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time() -> float:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


_BOOT = _boot_time()


def _process_metrics() -> list[str]:
    """The standard process_* metrics (what prometheus_client's process collector
    exports), from /proc/self where there is one, else from getrusage."""
    values: list[tuple[str, str, str, float]] = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    values.append(("process_cpu_seconds_total", "counter",
                   "Total user and system CPU time spent in seconds.",
                   usage.ru_utime + usage.ru_stime))
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        values.append(("process_virtual_memory_bytes", "gauge",
                       "Virtual memory size in bytes.", float(fields[20])))
        values.append(("process_resident_memory_bytes", "gauge",
                       "Resident memory size in bytes.", float(fields[21]) * _PAGE))
        if _BOOT:
            values.append(("process_start_time_seconds", "gauge",
                           "Start time of the process since unix epoch in seconds.",
                           _BOOT + float(fields[19]) / _TICKS))
        values.append(("process_open_fds", "gauge", "Number of open file descriptors.",
                       float(len(os.listdir("/proc/self/fd")))))
    except (OSError, IndexError, ValueError):
        values.append(("process_resident_memory_bytes", "gauge",
                       "Resident memory size in bytes (peak, from getrusage).",
                       float(usage.ru_maxrss) * 1024))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    values.append(("process_max_fds", "gauge", "Maximum number of open file descriptors.",
                   float(soft)))
    out = []
    for name, kind, help_text, v in values:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {v:g}"]
    return out

