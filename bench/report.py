"""The results table and bench/results/latest.json: figures, versions and machine facts."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import CaseResult, Row

PACKAGES = (
    "uvicorn", "starlette", "strawberry-graphql", "graphql-core", "broadcaster", "sqlalchemy",
    "aiosqlite", "asyncpg", "redis", "uvloop", "httptools", "websockets", "stripe", "localstripe",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "system": platform.system(),
        "python_executable": sys.executable,
    }


def format_figure(value: float, unit: str) -> str:
    if unit == "1/s":
        return f"{value:,.0f} /s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "KiB":
        return f"{value:.1f} KiB"
    return f"{value:.3g} {unit}"


def met_text(row: Row) -> str:
    if row.met is None:
        return "-"
    return "yes" if row.met else "NO"


def table(results: list[CaseResult]) -> str:
    """Render a Markdown table with one line per figure, as printed and as pasted in the README."""
    header = ["case", "paystream", "baseline", "ratio", "target", "met"]
    lines = [header]
    for result in results:
        for row in result.rows:
            lines.append([
                f"{result.title}: {row.figure}",
                format_figure(row.paystream, row.unit),
                format_figure(row.baseline, row.unit),
                "-" if row.ratio is None else f"{row.ratio:.2f}",
                row.target,
                met_text(row),
            ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = []
    for number, line in enumerate(lines):
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        rendered.append("| " + " | ".join(cells) + " |")
        if number == 0:
            rendered.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(rendered)


def format_profile(profile: dict[str, Any]) -> str:
    """List the top functions of a py-spy summary, by own samples and by inclusive samples."""
    if "error" in profile:
        return str(profile["error"])
    if profile.get("kind") == "tracemalloc":
        heading = (
            f"{profile['traced_kib_per_subscription']} KiB traced per subscription. "
            "The lines whose allocations grew most, per subscription:"
        )
        lines = [heading]
        for entry in profile["top"]:
            lines.append(f"  {entry['bytes_per_subscription']:7,d} B  "
                         f"{entry['blocks_per_subscription']:6.2f} blocks  {entry['site']}  "
                         f"{entry['source'][:70]}")
        return "\n".join(lines)
    processes = profile.get("processes", 1)
    where = f" in {processes} processes" if processes > 1 else ""
    lines = [f"{profile['gil_samples']} samples of the thread holding the GIL{where}"]
    for ranking, label in (("own", "own time"), ("inclusive", "inclusive time")):
        lines.append(f"  by {label}:")
        for entry in profile[ranking]:
            lines.append(f"    {entry['share'] * 100:5.1f}%  {entry['function']}")
    return "\n".join(lines)


def write_results(
    path: Path, results: list[CaseResult], run: dict[str, Any], errors: dict[str, str]
) -> None:
    document = {
        "run": run,
        "versions": versions(),
        "machine": machine(),
        "cases": {result.case: result.to_json() for result in results},
        "errors": errors,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
