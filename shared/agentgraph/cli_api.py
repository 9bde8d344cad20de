"""The CLI against a deployed api (`--api URL`): the same commands, exit codes and views
as on the local backend, through the Python client (`agentgraph.client`).

Each function returns the command's exit code; an error answer of the api is printed and
exits with the code the core table gives its `code` (2 for the caller's mistakes, 1 for
the system's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine
from typing import Any

from rich.console import Console

from agentgraph.api import models
from agentgraph.client import ApiError, Client
from agentgraph.client.records import RunReader, node_records, run_record
from agentgraph.core.errors import EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED
from agentgraph.view import ProgressView, print_outputs, print_run_tree


def connect(api: str, token: str | None, audience: str | None) -> Client:
    return Client(api, token=token or None, audience=audience or None)


def call(err: Console, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command's coroutine; an api error becomes its message and exit code."""
    try:
        return asyncio.run(main())
    except ApiError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        return exc.exit_code


def _print_run(
    out: Console,
    run: models.Run,
    as_json: bool,
    tree: bool,
    expand: Collection[str] = (),
    expand_all: bool = False,
) -> None:
    if as_json:
        out.print_json(data=run.model_dump(mode="json"))
    elif tree:
        print_run_tree(out, run_record(run), node_records(run), expand, expand_all)
    else:
        print_outputs(out, run_record(run), node_records(run))


async def follow(
    client: Client, run_id: str, err: Console, out: Console, as_json: bool
) -> models.Run:
    """Live progress from the client's stream, then the outputs (or the JSON record)."""
    runs = client.stream(run_id)
    try:
        first = await anext(runs)
        reader = RunReader(client, first)
        view = ProgressView(err, reader, run_id)
        final = first
        with view:
            await view.refresh()
            async for run in runs:
                reader.update(run)
                final = run
                await view.refresh()
    finally:
        await runs.aclose()
    _print_run(out, final, as_json, tree=False)
    return final


def run(
    document: dict[str, Any],
    value: Any,
    *,
    api: str,
    token: str | None,
    audience: str | None,
    as_json: bool,
    err: Console,
    out: Console,
) -> int:
    async def main() -> int:
        async with connect(api, token, audience) as client:
            started = await client.create(document, value)
            err.print(
                f"run [bold]{started.run_id}[/] of [bold]{started.graph}[/] ({api})",
                highlight=False,
            )
            try:
                final = await follow(client, started.run_id, err, out, as_json)
            except asyncio.CancelledError:
                err.print(
                    f"\n[yellow]interrupted[/]: the run goes on; cancel it with  "
                    f"agentgraph cancel {started.run_id} --api {api}"
                )
                raise
            return EXIT_OK if final.status == "succeeded" else EXIT_RUN_FAILED

    return call(err, main)


def show(
    run_id: str,
    *,
    api: str,
    token: str | None,
    audience: str | None,
    as_json: bool,
    err: Console,
    out: Console,
    expand: Collection[str] = (),
    expand_all: bool = False,
) -> int:
    async def main() -> int:
        async with connect(api, token, audience) as client:
            run = await client.get(run_id)
        _print_run(out, run, as_json, tree=True, expand=expand, expand_all=expand_all)
        return EXIT_RUN_FAILED if run.status in ("failed", "cancelled") else EXIT_OK

    return call(err, main)


def cancel(run_id: str, *, api: str, token: str | None, audience: str | None, err: Console) -> int:
    async def main() -> int:
        async with connect(api, token, audience) as client:
            after = await client.cancel(run_id)
        err.print(f"run {run_id} {'cancelled' if after.cancelled else 'had already ended'}")
        return EXIT_OK

    return call(err, main)


def trace(
    run_id: str,
    node: str | None,
    *,
    api: str,
    token: str | None,
    audience: str | None,
    err: Console,
    out: Console,
) -> int:
    from agentgraph import steps_view
    from agentgraph.core.records import Step

    async def main() -> int:
        async with connect(api, token, audience) as client:
            run = await client.get(run_id)
            wanted = [n.id for n in run.nodes if node is None or n.id == node]
            pages = await asyncio.gather(*(client.steps(run_id, n) for n in wanted))
        steps = {
            n: [Step.from_dict(s.model_dump(mode="json")) for s in page]
            for n, page in zip(wanted, pages, strict=True)
        }
        nodes = node_records(run)
        if node is not None and not wanted:
            err.print(f"[bold red]error:[/] run {run_id!r} has no node {node!r}")
            return EXIT_INVALID
        lines = steps_view.render(run_record(run), nodes, steps, None, node)
        out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
        return EXIT_OK

    return call(err, main)


def decide(
    run_id: str,
    node_id: str,
    decision: str,
    *,
    comment: str | None,
    payload: Any,
    api: str,
    token: str | None,
    audience: str | None,
    err: Console,
) -> int:
    """`agentgraph approve|reject --api URL`; `payload` is NO_PAYLOAD when not given."""

    async def main() -> int:
        async with connect(api, token, audience) as client:
            if decision == "approved":
                args = () if payload is NO_PAYLOAD else (payload,)
                decided = await client.approve(run_id, node_id, comment, *args)
            else:
                decided = await client.reject(run_id, node_id, comment)
        output = decided.node.output if isinstance(decided.node.output, dict) else {}
        err.print(
            f"node {node_id} of run {run_id}: {output.get('decision', decided.node.status)}",
            highlight=False,
        )
        return EXIT_OK

    return call(err, main)


def redrive(run_id: str, *, api: str, token: str | None, audience: str | None, err: Console) -> int:
    async def main() -> int:
        async with connect(api, token, audience) as client:
            after = await client.redrive(run_id)
        if after.redriven:
            err.print(f"run {run_id} redriven: {', '.join(after.nodes_to_run)} run again")
        else:
            err.print(f"run {run_id} was already redriven")
        return EXIT_OK

    return call(err, main)


NO_PAYLOAD: Any = object()
