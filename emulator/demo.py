"""The code-review demo on the gcp backend, through the HTTP API of the emulator stack.

    python -m emulator.demo                      # starts its own stack, runs, stops it
    python -m emulator.demo --api http://127.0.0.1:8490   # against `python -m emulator.stack`

It stores examples/code-review-cloud.yaml with POST /graphs, starts a run of it on
examples/sample_code.py with POST /runs (with an Idempotency-Key), and follows the run to
its end with GET /runs/{id}/events and GET /runs/{id}: every status change of every node
as the functions make it, including the review's Gemini call that fails once with 503
and comes back through a Cloud Task after its backoff. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from agentgraph.core import names

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAPH = REPO_ROOT / "examples" / "code-review-cloud.yaml"
SAMPLE = REPO_ROOT / "examples" / "sample_code.py"
TERMINAL = ("succeeded", "failed", "cancelled")


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


def call(
    api: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One JSON request; ApiError on a status >= 400."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        api.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        raise ApiError(exc.code, parsed) from None


def _clock(at: float, start: float) -> str:
    return f"+{at - start:6.2f}s"


def follow(api: str, run_id: str, start: float, timeout: float = 180.0) -> dict[str, Any]:
    """Print the run's events as they happen; return the finished run (with nodes)."""
    seq = 0
    deadline = time.monotonic() + timeout
    last_counts = ""
    while True:
        _, page = call(api, "GET", f"/runs/{run_id}/events?after={seq}")
        for event in page["events"]:
            seq = max(seq, event.get("seq") or seq)
            who = event.get("node_id") or "run"
            what = event.get("status") or event.get("kind")
            attempt = event.get("attempt")
            note = f" attempt {attempt}" if attempt and attempt > 1 else ""
            message = f"  {event['message']}" if event.get("message") else ""
            print(f"  {_clock(event['at'], start)}  {who:<11} {what:<10}{note}{message}")
        _, run = call(api, "GET", f"/runs/{run_id}")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run["counts"].items()))
        if counts != last_counts and run["status"] not in TERMINAL:
            print(f"  {'':>8}  ({run['status']}: {counts})")
            last_counts = counts
        if run["status"] in TERMINAL:
            return dict(run)
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f} s")
        time.sleep(0.25)


def summarize(run: dict[str, Any]) -> None:
    took = (run["finished_at"] or time.time()) - run["created_at"]
    usage = run["usage"]
    print(
        f"\nrun {run['run_id']} {run['status']} in {took:.2f} s · "
        f"{usage['input_tokens']} tokens in / {usage['output_tokens']} out · "
        f"${usage['cost_usd']:.6f}"
    )
    for node in run["nodes"]:
        detail = f"attempts {node['attempts']}" + (
            f" · model {node['model']}" if node.get("model") else ""
        )
        print(f"  {node['id']:<11} {node['status']:<10} {detail}")
    suggestions = (run.get("outputs") or {}).get("suggest")
    if suggestions:
        print("\nsuggest (the sink's output):")
        print(
            "  "
            + json.dumps(suggestions, indent=2, ensure_ascii=False)[:1500].replace("\n", "\n  ")
        )
    if run.get("error"):
        print(f"\nerror: {run['error']}")


def demo(api: str) -> dict[str, Any]:
    """Store the graph, start a run, follow it; returns the finished run."""
    document = yaml.safe_load(GRAPH.read_text())
    status, stored = call(api, "POST", "/graphs", document)
    print(
        f"POST /graphs → {status}: graph {stored['id']} version {stored['version']} "
        f"({GRAPH.relative_to(REPO_ROOT)})"
    )
    body = {
        "graph_id": stored["id"],
        "version": stored["version"],
        "input": {"code": SAMPLE.read_text(), "ticket": f"demo-{uuid.uuid4().hex[:8]}"},
    }
    key = str(uuid.uuid4())
    start = time.time()
    status, run = call(api, "POST", "/runs", body, {"Idempotency-Key": key})
    print(f"POST /runs → {status}: run {run['run_id']} ({run['status']})")
    again, same = call(api, "POST", "/runs", body, {"Idempotency-Key": key})
    print(f"POST /runs again with the same Idempotency-Key → {again}: run {same['run_id']}\n")
    finished = follow(api, run["run_id"], start)
    summarize(finished)
    return finished


def _show_command(run_id: str) -> str:
    return (
        f"agentgraph show {run_id} --backend gcp    # and: agentgraph logs {run_id} --backend gcp"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.demo", description=__doc__)
    parser.add_argument("--api", help="URL of a running stack's api (default: start one)")
    args = parser.parse_args(argv)
    if args.api:
        try:
            run = demo(args.api)
        except (ApiError, OSError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("\nInspect it from a shell with the stack's `export` lines:")
        print(f"  {_show_command(run['run_id'])}")
        return 0 if run["status"] == "succeeded" else 1

    from emulator import harness
    from emulator.stack import Stack

    print("starting the emulator stack (emulators, Gemini stub, functions)…", flush=True)
    try:
        stack = Stack(sweep_every_s=None).start()
    except harness.EmulatorNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"stack up in {stack.startup_seconds['total']:.1f} s; api at {stack.api_url}\n")
        run = demo(stack.api_url)
        env = {**os.environ, **stack.env()}
        print(f"\n$ {_show_command(run['run_id']).split('  #')[0].rstrip()}")
        subprocess.run(
            [sys.executable, "-m", "agentgraph", "show", run["run_id"], "--backend", "gcp"],
            env=env,
            check=False,
        )
        print(
            "\nWith `python -m emulator.stack` running (make emulators), the same command "
            f"works from any shell that has its export lines ({names.ENV_FIRESTORE_EMULATOR}, "
            f"{names.ENV_PROJECT})."
        )
        return 0 if run["status"] == "succeeded" else 1
    except (ApiError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
