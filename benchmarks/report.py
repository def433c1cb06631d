"""Tables (Markdown, for the terminal and the docs page) and plots from a results dict.

``python -m benchmarks.report [results.json]`` prints the tables of a committed run again and
redraws its plots next to it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PLAIN, ABORT = "#9e9e9e", "#1e88e5"
MODE_COLORS = {
    "abort": ABORT,
    "abort_early": "#90caf9",
    "poll_10ms": "#fb8c00",
    "poll_100ms": "#e53935",
}


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _range(s: dict[str, float], fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}} to {s['max']:{fmt}})"


def _rows(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def throughput_table(t: dict[str, Any]) -> list[str]:
    rows = []
    for name, case in t.items():
        if not isinstance(case, dict):
            continue
        plain = sorted(case["plain_rps"])[len(case["plain_rps"]) // 2]
        abort = sorted(case["abort_rps"])[len(case["abort_rps"]) // 2]
        goal = case["goal"]
        met = "" if goal is None else f"{goal:.2f}: {_met(case['ratio']['median'] >= goal)}"
        cpu = _range(case["cpu_ratio"], ".3f") if "cpu_ratio" in case else ""
        rows.append(
            [f"{name}: {case['what']}", f"{plain:,.0f}", f"{abort:,.0f}",
             _range(case["ratio"], ".3f"), cpu, met]
        )  # fmt: skip
    head = ["endpoint", "plain req/s", "fastapi-abort req/s", "ratio", "by CPU/request", "goal"]
    return _rows(head, rows)


def latency_table(lat: dict[str, Any]) -> list[str]:
    rows = []
    goals: dict[str, float] = lat["goals_p99_ms"]
    for held, modes in lat.items():
        if not held.isdigit():
            continue
        for mode, data in modes.items():
            s = data["summary"]
            goal = ""
            if mode == "abort":
                limit = goals.get(held, goals[max(goals, key=int)])
                goal = f"p99 < {limit:g} ms: {_met(s['p99_ms'] < limit)}"
            rows.append(
                [held, lat["modes"][mode], str(s["n"]), f"{s['p50_ms']:.3f}",
                 f"{s['p99_ms']:.3f}", f"{s['max_ms']:.3f}", goal]
            )  # fmt: skip
    head = ["other requests in flight", "detection", "trials", "p50 ms", "p99 ms", "max ms", "goal"]
    return _rows(head, rows)


def work_table(w: dict[str, Any]) -> list[str]:
    rows = []
    for kind, what in w["kinds"].items():
        k = w[kind]
        rows.append(
            [what, _range(k["plain_cpu"], ".2f"), _range(k["abort_cpu"], ".3f"),
             _range(k["saved_cpu"], ".2f"), str(k["max_chunks_after_trip"])]
        )  # fmt: skip
    head = [
        "endpoint",
        "plain CPU s",
        "fastapi-abort CPU s",
        "CPU s saved",
        "max chunks after trip",
    ]
    return _rows(head, rows)


def scale_table(s: dict[str, Any]) -> list[str]:
    rows = []
    goal = s["goal_extra_bytes"]
    for level, data in s["per_level"].items():
        if int(level) < 100:
            continue  # a few pages of noise divided by a few requests says nothing
        extra = data["extra_bytes"]
        rows.append(
            [level, _range(data["plain_bytes"], ",.0f"), _range(data["abort_bytes"], ",.0f"),
             _range(extra, ",.0f"), _met(extra["median"] < goal)]
        )  # fmt: skip
    head = ["held requests", "plain B/request", "fastapi-abort B/request", "extra B/request",
            f"extra < {goal} B"]  # fmt: skip
    return _rows(head, rows)


def header(results: dict[str, Any]) -> str:
    """When, where and with what the run was made."""
    m = results["machine"]
    versions = ", ".join(f"{name} {v}" for name, v in m["versions"].items())
    return (
        f"{results['mode'].capitalize()} run of {results['date']}, {results['seconds']:.0f} s: "
        f"{m['cores']} cores ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; "
        f"{versions}; uvicorn with httptools and uvloop, server on core 0, load on core 1."
    )


def table(results: dict[str, Any]) -> str:
    """All four tables, in Markdown; medians with (min to max) over the rounds."""
    parts = [
        (
            "Throughput (ratio = fastapi-abort / plain, per round; both loaded at once)",
            throughput_table,
        ),
        ("Detection latency (client close() to server callback)", latency_table),
        ("Work saved after clients abandon slow requests", work_table),
        ("Resident memory per held request", scale_table),
    ]
    keys = ["throughput", "latency", "work", "scale"]
    lines: list[str] = []
    for (title, make), key in zip(parts, keys, strict=True):
        lines += [f"**{title}**", "", *make(results[key]), ""]
    return "\n".join(lines).rstrip()


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results: dict[str, Any], out: Path) -> None:
    """throughput.png, latency.png, work.png and scale.png in ``out``."""
    t = results["throughput"]
    cases = [name for name, case in t.items() if isinstance(case, dict)]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for offset, (side, color, label) in enumerate(
        [("plain_rps", PLAIN, "plain FastAPI"), ("abort_rps", ABORT, "fastapi-abort")]
    ):
        values = [t[c][side] for c in cases]
        mids = [sorted(v)[len(v) // 2] for v in values]
        errs = [[m - min(v) for m, v in zip(mids, values, strict=True)],
                [max(v) - m for m, v in zip(mids, values, strict=True)]]  # fmt: skip
        xs = [i + (offset - 0.5) * 0.4 for i in range(len(cases))]
        ax.bar(xs, mids, 0.4, yerr=errs, color=color, label=label, capsize=3)
    ax.set_xticks(range(len(cases)), [f"{c}\n{t[c]['path']}" for c in cases])
    ax.set_ylabel("requests/s (median, min-max)")
    ax.set_title("Throughput, wrk, one server core")
    ax.legend()
    _save(fig, out / "throughput.png")

    lat = results["latency"]
    levels = [k for k in lat if k.isdigit()]
    fig, axes = plt.subplots(1, len(levels), figsize=(9, 3.6), sharey=True)
    for ax, held in zip(axes, levels, strict=True):
        modes = list(lat[held])
        for mode in modes:
            ms = sorted(s * 1000 for s in lat[held][mode]["seconds"])
            ax.plot(ms, [(j + 1) / len(ms) for j in range(len(ms))], label=mode,
                    color=MODE_COLORS.get(mode))  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("detection latency, ms (log)")
        ax.set_title(f"{held} other requests in flight")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of trials")
    axes[0].legend()
    _save(fig, out / "latency.png")

    w = results["work"]
    kinds = list(w["kinds"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for offset, (side, color, label) in enumerate(
        [("plain_cpu", PLAIN, "plain FastAPI"), ("abort_cpu", ABORT, "fastapi-abort")]
    ):
        xs = [i + (offset - 0.5) * 0.4 for i in range(len(kinds))]
        ax.bar(xs, [w[k][side]["median"] for k in kinds], 0.4, color=color, label=label)
    ax.set_xticks(range(len(kinds)), [f"{k} def" if k == "sync" else "async def" for k in kinds])
    ax.set_ylabel("server CPU s after the close")
    ax.set_title(f"{w['clients']} clients abandon slow requests")
    ax.legend()
    _save(fig, out / "work.png")

    s = results["scale"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for variant, color in (("plain", PLAIN), ("abort", ABORT)):
        for n, sweep in enumerate(s["sweeps"][variant]):
            held = [p["held"] for p in sweep]
            name: str | None = s["trial_modes"][variant] if n == 0 else None
            left.plot(held, [p["latency"]["p50_ms"] for p in sweep], "o-", color=color,
                      label=f"{name} p50" if name else None, alpha=0.8)  # fmt: skip
            left.plot(held, [p["latency"]["max_ms"] for p in sweep], "x:", color=color,
                      label=f"{name} max" if name else None, alpha=0.8)  # fmt: skip
            big = [p for p in sweep if p["held"] >= 100]
            right.plot([p["held"] for p in big], [p["bytes_per_request"] / 1024 for p in big],
                       "o-", color=color, alpha=0.8,
                       label=("plain FastAPI" if variant == "plain" else "fastapi-abort")
                       if n == 0 else None)  # fmt: skip
    left.set_xscale("symlog", linthresh=1)
    left.set_yscale("log")
    left.set_xlabel("other requests in flight")
    left.set_ylabel("detection latency, ms")
    left.set_title("Detection latency as requests pile up")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.set_xlabel("held requests")
    right.set_ylabel("server RSS growth per request, KiB")
    right.set_title("Memory per held request")
    right.set_ylim(bottom=0)
    right.legend()
    right.grid(alpha=0.3)
    _save(fig, out / "scale.png")


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/results.json")
    results = json.loads(path.read_text())
    plot(results, path.parent)
    print(header(results))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
