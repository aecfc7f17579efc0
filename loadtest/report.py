"""The end of a load run: `report.json` (DESIGN.md "Load test" keys and more),
`report.html` for people, PNG plots when matplotlib is installed (the `plots` extra).

`build_report` is pure (results in, a dict out); the writers only format it.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import percentile
from .plan import Attempt

__all__ = ["Result", "build_report", "write_report"]


@dataclass(slots=True)
class Result:
    """What happened to one attempt. Times in seconds from the start of the run."""

    attempt: Attempt
    placed_at: float
    code: int | None = None  # final status the caller got (None: none came)
    setup_ms: float | None = None  # INVITE sent -> final response received
    ended_at: float | None = None
    error: str = ""  # why it failed (timeout, transport, ...)
    leaks: list[str] = field(default_factory=list)
    rtp_sent: int = 0
    rtp_received: int = 0
    rtp_bad: int = 0  # packets whose payload was not the tone sent
    rtp_delay_ms: list[float] = field(default_factory=list)
    reason: str = ""  # the final response's Reason header, if any (why it was refused)
    cancelled_on_stop: bool = False  # still ringing at Ctrl-C: the tool CANCELled it

    @property
    def outcome(self) -> str:
        if self.code is None or self.error:
            return "failed"
        if 200 <= self.code < 300:
            return "completed"
        return "refused"


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{p}": round(percentile(values, p), 3) for p in (50, 95, 99)}


def _timeline(results: list[Result], duration: float) -> list[dict[str, Any]]:
    """Per second: attempts offered (planned), placed, completed, and setup percentiles."""
    n = max(1, math.ceil(duration))
    bins: list[dict[str, Any]] = [{"t": i, "offered": 0, "placed": 0, "completed": 0,
                                   "refused": 0, "failed": 0, "_setup": []} for i in range(n)]
    for r in results:
        i = min(n - 1, max(0, int(r.attempt.offset)))
        bins[i]["offered"] += 1
        j = min(n - 1, max(0, int(r.placed_at)))
        b = bins[j]
        b["placed"] += 1
        b[r.outcome] += 1
        if r.setup_ms is not None and r.outcome == "completed":
            b["_setup"].append(r.setup_ms)
    for b in bins:
        b.update(_pcts(b.pop("_setup")))
    return bins


def _placed_rate(results: list[Result]) -> float:
    """Attempts per second while they were being placed (first to last)."""
    if len(results) < 2:
        return float(len(results))
    t = [r.placed_at for r in results]
    span = max(t) - min(t)
    return round((len(t) - 1) / span, 2) if span > 0 else 0.0


def build_report(results: list[Result], *, duration_s: float, meta: dict[str, Any],
                 partial: bool = False) -> dict[str, Any]:
    """The report as a dict (see the module docstring and DESIGN.md)."""
    codes: dict[str, int] = {}
    refused: dict[str, int] = {}
    mismatches: list[dict[str, Any]] = []
    failures: dict[str, int] = {}
    leaks: list[dict[str, Any]] = []
    setup = [r.setup_ms for r in results if r.setup_ms is not None and r.outcome == "completed"]
    for r in results:
        if r.code is not None:
            codes[str(r.code)] = codes.get(str(r.code), 0) + 1
        if r.outcome == "refused":
            refused[str(r.code)] = refused.get(str(r.code), 0) + 1
        if r.outcome == "failed":
            failures[r.error or "no answer"] = failures.get(r.error or "no answer", 0) + 1
        if r.code != r.attempt.expect_code and not r.cancelled_on_stop:
            mismatches.append({"record": r.attempt.source_id, "x": r.attempt.x,
                               "offset_s": round(r.attempt.offset, 3),
                               "expected": r.attempt.expect_code, "got": r.code,
                               "error": r.error or None, "reason": r.reason or None})
        for what in r.leaks:
            leaks.append({"record": r.attempt.source_id, "x": r.attempt.x, "leak": what})
    steps: dict[str, dict[str, Any]] = {}
    for r in results:
        s = steps.setdefault(r.attempt.step, {"step": r.attempt.step, "attempted": 0,
                                              "completed": 0, "refused": 0, "failed": 0,
                                              "first": r.attempt.offset, "last": 0.0,
                                              "_setup": []})
        s["attempted"] += 1
        s[r.outcome] += 1
        s["first"] = min(s["first"], r.attempt.offset)
        s["last"] = max(s["last"], r.attempt.offset)
        if r.setup_ms is not None and r.outcome == "completed":
            s["_setup"].append(r.setup_ms)
    step_rows = []
    for s in steps.values():
        span = max(s.pop("last") - s.pop("first"), 1e-9)
        n = s["attempted"]
        s["offered_rate"] = round((n - 1) / span, 2) if n > 1 else float(n)
        s["achieved_rate"] = round(s["completed"] / max(span, 1.0), 2)
        s["setup_ms"] = _pcts(s.pop("_setup"))
        step_rows.append(s)
    completed = sum(1 for r in results if r.outcome == "completed")
    out: dict[str, Any] = {
        "attempted": len(results),
        "completed": completed,
        "refused": refused,
        "failed": sum(failures.values()),
        "setup_ms": _pcts(setup),
        "duration_s": round(duration_s, 3),
        "leaks": leaks,
        "rate": round(len(results) / duration_s, 2) if duration_s > 0 else 0.0,
        "placed_rate": _placed_rate(results),
        "completed_rate": round(completed / duration_s, 2) if duration_s > 0 else 0.0,
        "codes": codes,
        "failures": failures,
        "expected_mismatches": len(mismatches),
        "cancelled_on_stop": sum(1 for r in results
                                 if r.cancelled_on_stop and r.outcome != "completed"),
        "mismatches": mismatches[:50],
        "steps": step_rows,
        "timeline": _timeline(results, duration_s),
        "partial": partial,
        **meta,
    }
    rtp = [r for r in results if r.rtp_sent or r.rtp_received]
    if rtp:
        loss = [100.0 * max(0, r.rtp_sent - r.rtp_received) / r.rtp_sent
                for r in rtp if r.rtp_sent]
        delays = [d for r in rtp for d in r.rtp_delay_ms]
        out["rtp"] = {"calls": len(rtp), "sent": sum(r.rtp_sent for r in rtp),
                      "received": sum(r.rtp_received for r in rtp),
                      "bad_payload": sum(r.rtp_bad for r in rtp),
                      "loss_pct": {"mean": round(sum(loss) / len(loss), 3) if loss else None,
                                   "max": round(max(loss), 3) if loss else None},
                      "one_way_delay_ms": _pcts(delays)}
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return html.escape(str(v))


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(rep: dict[str, Any], plots: list[str]) -> str:
    """One self-contained page: the summary, steps, codes, leaks, mismatches, plots."""
    s = rep["setup_ms"]
    title = "Load test report" + (" (PARTIAL: stopped early)" if rep.get("partial") else "")
    summary = [
        ("engine", rep.get("engine")), ("target", rep.get("target")),
        ("attempted", rep["attempted"]), ("completed", rep["completed"]),
        ("refused", ", ".join(f"{k}: {v}" for k, v in sorted(rep["refused"].items())) or "0"),
        ("failed", rep["failed"]), ("duration (s)", rep["duration_s"]),
        ("attempts per second while placing", rep["placed_rate"]),
        ("setup p50 / p95 / p99 (ms)", f"{_fmt(s['p50'])} / {_fmt(s['p95'])} / {_fmt(s['p99'])}"),
        ("answers other than expected", rep["expected_mismatches"]),
        ("ringing at Ctrl-C, cancelled", rep["cancelled_on_stop"]),
        ("leaks", len(rep["leaks"])),
    ]
    if "direct" in rep:
        summary.append(("direct anchor (same run)", json.dumps(rep["direct"])))
    if "rtp" in rep:
        r = rep["rtp"]
        summary.append(("RTP loss mean / max (%)",
                        f"{_fmt(r['loss_pct']['mean'])} / {_fmt(r['loss_pct']['max'])}"))
        d = r["one_way_delay_ms"]
        summary.append(("RTP one-way delay p50 / p99 (ms)", f"{_fmt(d['p50'])} / {_fmt(d['p99'])}"))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
             "padding:.2em .6em;text-align:right}th{background:#eee}"
             ".bad{color:#b00;font-weight:bold}</style></head><body>",
             f"<h1>{title}</h1><table>"]
    for k, v in summary:
        cls = " class='bad'" if k in ("leaks", "failed") and v else ""
        parts.append(f"<tr><th>{html.escape(k)}</th><td{cls}>{_fmt(v)}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Steps</h2>" + _table(
        [{**st, "setup p99": st["setup_ms"]["p99"]} for st in rep["steps"]],
        ["step", "attempted", "completed", "refused", "failed", "offered_rate",
         "achieved_rate", "setup p99"]))
    parts.append("<h2>Final answers</h2>" + _table(
        [{"code": k, "calls": v} for k, v in sorted(rep["codes"].items())], ["code", "calls"]))
    if "sms" in rep:  # SMS over SMPP (profile `sms`, replay --messages)
        m = rep["sms"]
        rows = [{"what": k, "value": json.dumps(m[k]) if isinstance(m[k], dict) else m[k]}
                for k in ("submitted", "accepted", "refused", "delivered",
                          "wrong_recipient_or_sender", "delivery_ms", "expected_mismatches",
                          "error") if k in m]
        parts.append("<h2>SMS</h2>" + _table(rows, ["what", "value"]))
        if m.get("mismatches"):
            parts.append("<h2>SMS statuses other than expected</h2>" + _table(
                m["mismatches"], ["record", "x", "expected", "got"]))
    if rep["leaks"]:
        parts.append("<h2 class='bad'>Leaks</h2>" + _table(rep["leaks"], ["record", "x", "leak"]))
    if rep["mismatches"]:
        parts.append("<h2>Answers other than expected (first 50)</h2>" + _table(
            rep["mismatches"], ["record", "x", "offset_s", "expected", "got", "reason", "error"]))
    for p in plots:
        parts.append(f"<h2>{html.escape(p)}</h2><img src='{html.escape(p)}' alt='{p}'>")
    if not plots:
        parts.append("<p>No plots: install the <code>plots</code> extra (matplotlib).</p>")
    parts.append("<h2>Per second</h2>" + _table(
        rep["timeline"], ["t", "offered", "placed", "completed", "refused", "failed",
                          "p50", "p95", "p99"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def plot(rep: dict[str, Any], out: Path) -> list[str]:
    """PNG plots with matplotlib (optional: [] without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    tl = rep["timeline"]
    t = [b["t"] for b in tl]
    made = []
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [b["offered"] for b in tl], label="offered (attempts/s)")
    ax.plot(t, [b["placed"] for b in tl], label="placed (attempts/s)")
    ax.plot(t, [b["completed"] for b in tl], label="completed (calls/s)")
    ax.set_xlabel("s")
    ax.set_ylabel("per second")
    ax.legend()
    ax.set_title("Offered vs achieved rate")
    fig.savefig(out / "rate.png", dpi=80)
    plt.close(fig)
    made.append("rate.png")
    fig, ax = plt.subplots(figsize=(8, 4))
    for p in ("p50", "p95", "p99"):
        ax.plot(t, [b[p] if b[p] is not None else float("nan") for b in tl], label=p)
    ax.set_xlabel("s")
    ax.set_ylabel("setup ms (INVITE -> 200)")
    ax.legend()
    ax.set_title("Setup latency percentiles")
    fig.savefig(out / "setup.png", dpi=80)
    plt.close(fig)
    made.append("setup.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = ["completed", *(f"refused {k}" for k in sorted(rep["refused"])), "failed"]
    values = [rep["completed"], *(rep["refused"][k] for k in sorted(rep["refused"])),
              rep["failed"]]
    ax.bar(labels, values)
    ax.set_title("Outcomes")
    fig.savefig(out / "outcomes.png", dpi=80)
    plt.close(fig)
    made.append("outcomes.png")
    return made


def write_report(rep: dict[str, Any], out: Path) -> list[Path]:
    """report.json, the plots and report.html in `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(rep, out)
    rep["plots"] = plots
    (out / "report.json").write_text(json.dumps(rep, indent=2, default=str))
    (out / "report.html").write_text(render_html(rep, plots))
    return [out / "report.json", out / "report.html", *(out / p for p in plots)]
