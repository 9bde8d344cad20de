"""`python -m bench.run [--only local,parallel,emulator] [--repeat N]` (or `make bench`).

Runs the registered measurements with a progress bar, prints a table (figure, value,
goal, ratio and verdict) and writes bench/results.json with every figure: a number, or
null with the reason printed and kept under `notes`. Timing is never asserted; what
counts are ratios measured in one run on one machine (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import (  # noqa: F401  (they register measurements)
    cli_path,
    local_vs_langgraph,
    parallel,
    tracing_bench,
)
from bench.measure import (
    EMULATOR_FIGURES,
    REGISTRY,
    Context,
    Figure,
    Figures,
    Measurement,
    Unavailable,
    measurement,
)

RESULTS = Path(__file__).with_name("results.json")
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
# bench.run rewrites what lies between these two lines of docs/benchmarks.md.
DOC_BEGIN = "<!-- bench-results:begin (written by python -m bench.run; do not edit) -->"
DOC_END = "<!-- bench-results:end -->"
# Every key results.json must carry, in this order.
KEYS = (
    "local_ms_per_node",
    "local_2000_ms_per_node",
    "langgraph_ms_per_node",
    "langgraph_sqlite_ms_per_node",
    "cli_ms_per_node",
    "parallel_efficiency_local",
    "parallel_efficiency_tools",
    "parallel_efficiency_cli",
    "parallel_efficiency_langgraph",
    "parallel_efficiency_langgraph_gemini",
    *(f.key for f in EMULATOR_FIGURES),
    *(f.key for f in tracing_bench.FIGURES),
)
_GCP_MODULES = (
    "agentgraph.backends.gcp.firestore_store",
    "agentgraph.backends.gcp.pubsub_dispatcher",
    "agentgraph.backends.gcp.cloud_tasks_retries",
)
GCP_MISSING = "needs the GCP backend (not yet available)"
DEFAULT_REPEAT = 5


def register_emulator_bench() -> None:
    """bench/emulator_bench.py registers the `emulator` measurement once the GCP backend
    imports; until then a stand-in reports why its figures are null."""
    reason: str
    try:
        for module in _GCP_MODULES:
            importlib.import_module(module)
    except ImportError as exc:
        reason = f"{GCP_MISSING}: {exc}"
    else:
        try:
            importlib.import_module("bench.emulator_bench")
            return
        except ModuleNotFoundError as exc:
            if exc.name != "bench.emulator_bench":
                raise
            reason = (
                "the GCP backend imports, but its emulator measurements "
                "(bench/emulator_bench.py) are not written yet"
            )

    @measurement("emulator", "the GCP backend on the emulators", EMULATOR_FIGURES, lambda _r: 0)
    async def _stand_in(ctx: Context) -> Figures:
        raise Unavailable(reason)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        ram_gb = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(terse=True),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("agentgraph", "langgraph", "langgraph-checkpoint-sqlite", "google-genai"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


async def run_all(
    selected: Sequence[Measurement], repeat: int, console: Console
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any], bool]:
    """(figures, reasons for nulls, details, whether every measurement ran cleanly)."""
    figures: dict[str, Any] = {}
    notes: dict[str, str] = {}
    details: dict[str, Any] = {}
    clean = True
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("benchmarks", total=sum(m.steps(repeat) for m in selected))
        for item in selected:
            title = item.title

            def advance(step: str, title: str = title) -> None:
                progress.update(overall, description=f"{title}: {step}")
                progress.advance(overall)

            done_before = progress.tasks[0].completed
            with tempfile.TemporaryDirectory(prefix=f"bench-{item.name}-") as workdir:
                ctx = Context(repeat=repeat, workdir=Path(workdir), advance=advance)
                try:
                    got = await item.run(ctx)
                except Unavailable as exc:
                    got = {}
                    for key in item.keys:
                        ctx.note(key, str(exc))
                except Exception as exc:
                    clean = False
                    console.print(f"[red]{item.name} failed[/red]")
                    console.print(traceback.format_exc(), markup=False)
                    got = {}
                    for key in item.keys:
                        ctx.note(key, f"{item.name} failed: {type(exc).__name__}: {exc}")
            for failure in ctx.failures:
                clean = False
                console.print(f"{item.name} failed in part {failure}", markup=False, style="red")
            for key in item.keys:
                value = got.get(key)
                figures[key] = value
                if value is None and key not in ctx.notes:
                    ctx.note(key, f"{item.name} did not report it")
                if value is None:
                    notes[key] = ctx.notes[key]
            details.update(ctx.details)
            progress.update(overall, completed=done_before + item.steps(repeat))
        progress.update(overall, description="done")
    return figures, notes, details, clean


def _format(value: Any, unit: str) -> str:
    if value is None:
        return "null"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "ideal/wall":
        return f"{value:.3f}"
    return f"{value:g} {unit}"


def table(figures: dict[str, Figure], results: dict[str, Any]) -> Table:
    out = Table(title=f"agentgraph benchmarks, {results['date']}")
    out.add_column("figure", no_wrap=True)
    for column in ("value", "goal", "ratio", "verdict", "what"):
        out.add_column(column, overflow="fold", no_wrap=column in ("value", "verdict"))
    for key in KEYS:
        figure = figures[key]
        verdict = figure.verdict(results)
        ratio_text, met = verdict if verdict else ("", None)
        mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: ""}[met]
        out.add_row(
            key, _format(results.get(key), figure.unit), figure.goal, ratio_text, mark, figure.label
        )
    return out


def _markdown_value(value: Any, unit: str) -> str:
    if value is None:
        return "null"
    if unit == "USD":
        return f"{value:.3g} USD"
    return _format(value, unit)


def markdown(figures: dict[str, Figure], results: dict[str, Any]) -> str:
    """The results table of docs/benchmarks.md: this run's figures, machine and date."""
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in results["details"]["versions"].items())
    lines = [
        f"{results['date']}, {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, "
        f"{m['python']}, {m['os']}; {versions}; `--repeat {results['details']['repeat']}`.",
        "",
        "| figure | value | goal | ratio | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key in KEYS:
        figure = figures[key]
        verdict = figure.verdict(results)
        ratio_text, met = verdict if verdict else ("", None)
        mark = {True: "met", False: "missed", None: ""}[met]
        value = _markdown_value(results.get(key), figure.unit)
        lines.append(
            f"| `{key}` | {value} | {figure.goal} | {ratio_text if ratio_text != '-' else ''} "
            f"| {mark} |"
        )
    merged = results["details"].get("merged")
    if merged:
        lines.append("")
        lines.append(
            f"Kept from the run of {merged['from']} (`--merge`): "
            + ", ".join(f"`{k}`" for k in merged["keys"])
            + "."
        )
    if results["notes"]:
        lines.append("")
        for key, reason in results["notes"].items():
            lines.append(f"- `{key}` is null: {reason}")
    return "\n".join(lines)


def rewrite_doc(path: Path, table_text: str) -> bool:
    """Replace the text between the markers; False (doc untouched) when they are missing."""
    if not path.exists():
        return False
    text = path.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        return False
    head = text[: begin + len(DOC_BEGIN)]
    path.write_text(f"{head}\n{table_text}\n{text[end:]}")
    return True


def _earlier(path: Path) -> dict[str, Any]:
    """The results an earlier run wrote (for --merge); empty when there are none."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated measurement names (default: all)"
    )
    parser.add_argument(
        "--repeat", type=int, default=DEFAULT_REPEAT, help="timed rounds after a warm-up"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the figures of measurements not run from the existing output file",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")

    register_emulator_bench()
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - REGISTRY.keys())
    if unknown:
        parser.error(
            f"--only: unknown measurement {', '.join(unknown)}; known: {', '.join(REGISTRY)}"
        )
    selected = [m for name, m in REGISTRY.items() if not wanted or name in wanted]
    declared = {f.key: f for m in REGISTRY.values() for f in m.figures}
    missing = [key for key in KEYS if key not in declared]
    if missing:
        raise SystemExit(f"no registered measurement provides {', '.join(missing)}")

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a log file: do not fold the table into 80 columns
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    figures, notes, details, clean = asyncio.run(run_all(selected, args.repeat, console))
    earlier = _earlier(args.output) if args.merge else {}
    for item in REGISTRY.values():
        if item not in selected:
            for key in item.keys:
                figures[key] = earlier.get(key)
                notes[key] = earlier.get("notes", {}).get(key, f"not run (--only {args.only})")
    results: dict[str, Any] = {key: figures.get(key) for key in KEYS}
    results["machine"] = machine()
    results["date"] = date
    results["notes"] = {key: notes[key] for key in KEYS if results[key] is None}
    results["details"] = {
        **(earlier.get("details") or {}),
        "repeat": args.repeat,
        "versions": _versions(),
        **details,
    }
    results["details"].pop("merged", None)
    kept = [k for m in REGISTRY.values() if m not in selected for k in m.keys]
    if earlier and kept:
        results["details"]["merged"] = {"from": earlier.get("date"), "keys": kept}

    console.print(table(declared, results))
    by_reason: dict[str, list[str]] = {}
    for key, reason in results["notes"].items():
        by_reason.setdefault(reason, []).append(key)
    for reason, keys in by_reason.items():
        console.print(f"null: {', '.join(keys)}\n  because {reason}", markup=False)
    m = results["machine"]
    console.print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['python']}; "
        "compare ratios measured in one run, never absolute times across runs",
        markup=False,
    )
    partial = args.output.with_name(args.output.name + ".tmp")
    partial.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    partial.replace(args.output)  # a reader never sees half a file
    console.print(f"wrote {args.output}", markup=False)
    if args.output.resolve() == RESULTS.resolve():
        if rewrite_doc(DOC, markdown(declared, results)):
            console.print(f"updated the results table in {DOC}", markup=False)
        else:
            console.print(f"{DOC}: results markers not found, table not written", markup=False)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
