"""`agentgraph`: validate, run, show, resume, cancel and draw graphs.

Exit codes: 0 the run succeeded (or the command did its job), 1 the run failed or was
cancelled, 2 invalid input (graph, run input, unknown run id). With `--json`, the run
record goes to stdout and everything meant for people goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from agentgraph import observability
from agentgraph.cli_loading import loading
from agentgraph.core import names
from agentgraph.core.documents import parse_yaml
from agentgraph.core.errors import (
    AgentgraphError,
    GraphInvalid,
    InputInvalid,
    NodeNotFound,
    RequestInvalid,
    RunNotFound,
    kind_of,
)
from agentgraph.core.run_json import run_to_json
from agentgraph.core.status import RunStatus
from agentgraph.view import (
    ProgressView,
    draw_graph,
    print_events,
    print_outputs,
    print_run_tree,
)
from agentgraph.view_grow import folded_groups, group_events

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Run graphs of LLM agents and tools, locally or on Google Cloud.",
)
err = Console(stderr=True)
out = Console()

T = TypeVar("T")
DEFAULT_DB = ".agentgraph/runs.db"

DbOption = Annotated[
    str, typer.Option("--db", envvar=names.ENV_DB, help="SQLite file of the local backend.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the run record as JSON on stdout.")]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        "-w",
        min=1,
        max=256,
        help="Nodes run at once (default 64; --max-concurrency caps each model, default 32).",
    ),
]
ToolsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tools", "-t", help="Python module to import for its @tool functions (repeatable)."
    ),
]
LimitsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--max-concurrency",
        "-c",
        help="Cap simultaneous calls per model: MODEL=N, '*'=N for the rest (repeatable).",
    ),
]
BackendOption = Annotated[
    str, typer.Option("--backend", envvar=names.ENV_BACKEND, help="local, or gcp (Firestore).")
]
ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar=names.ENV_API_URL,
        help="URL of a deployed api: drive it with the Python client (implies --backend gcp).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar=names.ENV_API_TOKEN, help="Bearer token for --api."),
]
ExpandOption = Annotated[
    list[str] | None,
    typer.Option(
        "--expand",
        "-e",
        help="Show this map's items one by one (its id, e.g. review or rounds@2/review, or "
        "its template path, e.g. rounds/review; repeatable).",
    ),
]
AllOption = Annotated[bool, typer.Option("--all", help="Show every map's items one by one.")]
AudienceOption = Annotated[
    str | None,
    typer.Option(
        "--audience", help="For --api: fetch Google ID tokens for this audience (the api's URL)."
    ),
]


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _fail(message: str, code: int = 2) -> _Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return _Exit(code)


def _run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(main())
    except (GraphInvalid, InputInvalid) as exc:
        raise _fail(str(exc)) from exc
    except RunNotFound as exc:
        raise _fail(f"{exc}. List runs with: agentgraph runs") from exc


def load_document(path: Path) -> dict[str, Any]:
    """Read a graph file (YAML or JSON)."""
    if not path.exists():
        raise _fail(f"{path}: no such file")
    try:
        data = parse_yaml(path.read_bytes(), str(path))
    except RequestInvalid as exc:
        raise _fail("\n".join(str(p) for p in exc.problems)) from exc
    if not isinstance(data, dict):
        raise _fail(
            f"{path}: expected a mapping with 'name' and 'nodes', found {type(data).__name__}"
        )
    return data


def parse_input(raw: str | None, sets: list[str] | None) -> Any:
    """--input '{"a": 1}' or --input @file.json, then each --set key=value or key=@file."""
    value: Any = None
    if raw:
        text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _fail(f"--input: not valid JSON: {exc}") from exc
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise _fail(f"--set {item!r}: expected KEY=VALUE or KEY=@FILE")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise _fail("--set needs the input to be a JSON object")
        if text.startswith("@"):
            path = Path(text[1:])
            if not path.exists():
                raise _fail(f"--set {key}: no such file {path}")
            value[key] = path.read_text()
        else:
            try:
                value[key] = json.loads(text)
            except ValueError:
                value[key] = text
    return value


# The SQLite stores this command opened (`_open_local`, `_open_store`), closed by `main`.
_OPENED_STORES: list[Any] = []


def _sqlite_store(db: str) -> Any:
    from agentgraph.backends.local import SqliteStore

    store = SqliteStore(db)
    _OPENED_STORES.append(store)
    return store


def _open_local(
    db: str,
    workers: int | None = None,
    tools: list[str] | None = None,
    limits: list[str] | None = None,
    on_approval: Callable[[str, str], Coroutine[Any, Any, None]] | None = None,
    gemini_processes: int = 0,
) -> Any:
    """The local runtime with the CLI's defaults. `gemini_processes`: worker processes
    for Gemini's SDK calls (`llm/sdk_pool.py`), for the commands that run graphs; their
    runtime is entered with `_running`, which also ends the workers."""
    with loading():
        from agentgraph.backends.local import LocalRuntime
        from agentgraph.llm import default_router, parse_concurrency
        from agentgraph.tools import default_registry, load_modules

    observability.setup("agentgraph-cli", configure_logs=False)  # AGENTGRAPH_TRACE
    load_modules(tools or [])
    load_modules(os.environ.get(names.ENV_TOOLS, "").split(","))
    try:
        caps = parse_concurrency(",".join(limits)) if limits else None
    except ValueError as exc:
        raise _fail(f"--max-concurrency: {exc}") from exc
    pool: dict[str, Any] = {"workers": workers} if workers else {}  # else DEFAULT_WORKERS
    if on_approval is not None:
        pool["on_approval"] = on_approval
    router = default_router(caps, gemini_processes=gemini_processes, loading=loading)
    return LocalRuntime(_sqlite_store(db), router, default_registry, **pool)


def _open_running(
    db: str, workers: int | None, tools: list[str] | None, limits: list[str] | None
) -> Any:
    """The runtime of a command that runs graphs (run, resume, redrive): it prints how to
    approve a node that waits, and its Gemini calls go to worker processes."""
    return _open_local(db, workers, tools, limits, _approval_hint(db), _running_defaults())


def _running_defaults() -> int:
    """Gemini worker processes when a command runs graphs: one per core up to four (none
    on one core). Measured on 2 cores (bench/parallel.py), they keep the SDK's ~2 ms of
    CPU per call off the engine's interpreter lock."""
    from agentgraph.llm.sdk_pool import default_workers

    return default_workers()


@contextlib.asynccontextmanager
async def _running(runtime: Any) -> AsyncIterator[Any]:
    """`async with runtime`, then release the models' clients and worker processes."""
    try:
        async with runtime:
            yield runtime
    finally:
        await runtime.engine.llm.aclose()


def _approval_hint(db: str) -> Callable[[str, str], Coroutine[Any, Any, None]]:
    """What `run`, `resume` and `redrive` print when a node starts waiting for approval:
    its message and the exact commands that decide it (from another terminal)."""
    store_db = "" if db == DEFAULT_DB else f" --db {db}"

    async def hint(run_id: str, node_id: str) -> None:
        from agentgraph.backends.local import SqliteStore

        store = SqliteStore(db)
        try:
            record = await store.get_node(run_id, node_id)
        finally:
            store.close()
        message = record.output.get("message") if record and isinstance(record.output, dict) else ""
        err.print(
            f"[bold blue]node {node_id} waits for approval[/]: {message}\n"
            f"  approve:  agentgraph approve {run_id} {node_id}{store_db} "
            "[--comment TEXT] [--payload JSON]\n"
            f"  reject:   agentgraph reject {run_id} {node_id}{store_db} [--comment TEXT]",
            highlight=False,
            markup=True,
        )

    return hint


def _open_store(backend: str, db: str) -> Any:
    if backend == "local":
        if db != ":memory:" and not Path(db).exists():
            raise _fail(f"no local runs yet ({db} does not exist)")
        return _sqlite_store(db)
    if backend == "gcp":
        from agentgraph.backends.gcp import open_store  # type: ignore[attr-defined]

        return open_store()
    raise _fail(f"--backend: expected 'local' or 'gcp', found {backend!r}")


def _print_json(data: Any) -> None:
    """Colours on a terminal; for a pipe plain JSON (`json_layout`), which costs
    microseconds per node where rich's highlighter cost milliseconds (15 s for a
    2,000-node record)."""
    if out.is_terminal:
        out.print_json(data=data)
    else:
        out.file.write(json_layout(data) + "\n")
        out.file.flush()


def json_layout(data: Any) -> str:
    """A record's top-level fields one per line, and each item of a list field (a run's
    nodes) on a line of its own: grep finds a node's line, and every line is written by
    the C encoder (`indent=` falls back to the pure-Python one: 13 µs a node)."""
    if not isinstance(data, dict) or not data:
        return json.dumps(data, indent=2, ensure_ascii=False)
    fields = []
    for key, value in data.items():
        name = json.dumps(key, ensure_ascii=False)
        if isinstance(value, list) and value:
            items = ",\n".join(f"    {json.dumps(item, ensure_ascii=False)}" for item in value)
            fields.append(f"  {name}: [\n{items}\n  ]")
        else:
            fields.append(f"  {name}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(fields) + "\n}"


async def _follow(runtime: Any, run_id: str, as_json: bool) -> int:
    view = ProgressView(err, runtime.store, run_id)
    with view:
        try:
            run = await runtime.wait(run_id, on_change=view.refresh)
        finally:
            await view.flush()
    nodes = await runtime.store.list_nodes(run_id)
    if as_json:
        _print_json(run_to_json(run, nodes))
    else:
        print_outputs(out, run, nodes)
    return 0 if run.status == RunStatus.SUCCEEDED else 1


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Graph file (YAML or JSON).")],
    tools: ToolsOption = None,
) -> None:
    """Check a graph and list every problem (exit 2 if there are any)."""
    runtime = _open_local(":memory:", 1, tools)
    graph = runtime.engine.compile(load_document(file))
    err.print(
        f"[green]ok[/]: graph [bold]{graph.name}[/] — {len(graph)} nodes, "
        f"{len(graph.roots)} roots, {len(graph.sinks)} sinks",
        highlight=False,
    )


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Graph file (YAML or JSON).")],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Run input: JSON, or @file.json.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Input field: KEY=VALUE or KEY=@file.")
    ] = None,
    workers: WorkersOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
    tools: ToolsOption = None,
    limits: LimitsOption = None,
    backend: BackendOption = "local",
    api: ApiOption = None,
    token: TokenOption = None,
    audience: AudienceOption = None,
) -> None:
    """Run a graph on the local backend, or on a deployed one (--api), showing live
    progress and the outputs."""
    document = load_document(file)
    value = parse_input(input, set_)
    if api or backend == "gcp":
        _exit_api(api, token, audience)
        from agentgraph import cli_api

        assert api is not None
        code = cli_api.run(
            document,
            value,
            api=api,
            token=token,
            audience=audience,
            as_json=as_json,
            err=err,
            out=out,
        )
        raise _Exit(code)

    async def main() -> int:
        runtime = _open_running(db, workers, tools, limits)
        async with _running(runtime):
            started = await runtime.start(document, value)
            err.print(
                f"run [bold]{started.run_id}[/] of [bold]{started.graph_name}[/] ({db})",
                highlight=False,
            )
            try:
                return await _follow(runtime, started.run_id, as_json)
            except asyncio.CancelledError:
                err.print(
                    f"\n[yellow]interrupted[/]: resume with  agentgraph resume {started.run_id}"
                )
                raise

    raise _Exit(_run_async(main))


@app.command()
def resume(
    run_id: str,
    workers: WorkersOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
    tools: ToolsOption = None,
    limits: LimitsOption = None,
) -> None:
    """Continue a run whose process was interrupted; finished nodes are not re-run."""
    _open_store("local", db).close()

    async def main() -> int:
        runtime = _open_running(db, workers, tools, limits)
        async with _running(runtime):
            run = await runtime.resume(run_id)
            if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                err.print(
                    f"run [bold]{run_id}[/] is {run.status.value}: resume continues an "
                    "interrupted run, it does not run failed nodes again. To run what failed "
                    f"or was cancelled again (succeeded nodes keep their outputs):\n"
                    f"  agentgraph redrive {run_id}",
                    highlight=False,
                )
                return 1
            err.print(f"resuming run [bold]{run_id}[/]", highlight=False)
            return await _follow(runtime, run_id, as_json)

    raise _Exit(_run_async(main))


@app.command()
def show(
    run_id: str,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
    expand: ExpandOption = None,
    expand_all: AllOption = False,
    backend: BackendOption = "local",
    api: ApiOption = None,
    token: TokenOption = None,
    audience: AudienceOption = None,
) -> None:
    """A run as a tree: status, duration, attempts, tokens, cost and errors per node."""
    if api:
        _exit_api(api, token, audience)
        from agentgraph import cli_api

        code = cli_api.show(
            run_id,
            api=api,
            token=token,
            audience=audience,
            as_json=as_json,
            err=err,
            out=out,
            expand=expand or (),
            expand_all=expand_all,
        )
        raise _Exit(code)
    store = _open_store(backend, db)

    async def main() -> int:
        run = await store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        nodes = await store.list_nodes(run_id)
        if as_json:
            _print_json(run_to_json(run, nodes))
        else:
            print_run_tree(out, run, nodes, expand or (), expand_all)
        return 0 if run.status in (RunStatus.SUCCEEDED, RunStatus.RUNNING, RunStatus.PENDING) else 1

    raise _Exit(_run_async(main))


@app.command()
def logs(
    run_id: str,
    db: DbOption = DEFAULT_DB,
    backend: BackendOption = "local",
    expand: ExpandOption = None,
    expand_all: AllOption = False,
) -> None:
    """The run's timeline: every status change, retry and error, in order. A map of more
    than 10 items is one line per change of the whole map, with counts (--expand, --all)."""
    store = _open_store(backend, db)

    async def main() -> int:
        if await store.get_run(run_id) is None:
            raise RunNotFound(run_id)
        events = await store.list_events(run_id)
        print_events(out, group_events(events, expand or (), expand_all))
        folded = folded_groups(events, expand or (), expand_all)
        if folded:
            names = " ".join(f"--expand {g}" for g in folded)
            err.print(f"maps shown as counts; each item with {names} (or --all)", highlight=False)
        return 0

    raise _Exit(_run_async(main))


@app.command()
def runs(db: DbOption = DEFAULT_DB, limit: int = 20, backend: BackendOption = "local") -> None:
    """Recent runs, newest first."""
    store = _open_store(backend, db)

    async def main() -> int:
        for record in await store.list_runs(limit=limit):
            out.print(
                f"{record.run_id}  {record.status.value:<10} {record.graph_name}", highlight=False
            )
        return 0

    raise _Exit(_run_async(main))


@app.command()
def cancel(
    run_id: str,
    db: DbOption = DEFAULT_DB,
    api: ApiOption = None,
    token: TokenOption = None,
    audience: AudienceOption = None,
) -> None:
    """Cancel a run: nodes that have not started will not start."""
    if api:
        _exit_api(api, token, audience)
        from agentgraph import cli_api

        raise _Exit(cli_api.cancel(run_id, api=api, token=token, audience=audience, err=err))
    store = _open_store("local", db)
    store.close()

    async def main() -> int:
        runtime = _open_local(db, 1)
        changed = await runtime.engine.cancel(run_id)
        err.print(f"run {run_id} {'cancelled' if changed else 'had already ended'}")
        return 0

    raise _Exit(_run_async(main))


CommentOption = Annotated[
    str | None, typer.Option("--comment", "-m", help="Why: recorded with the decision.")
]


@app.command()
def approve(
    run_id: str,
    node_id: str,
    comment: CommentOption = None,
    payload: Annotated[
        str | None,
        typer.Option("--payload", help="JSON that replaces the node's computed value."),
    ] = None,
    db: DbOption = DEFAULT_DB,
    api: ApiOption = None,
    token: TokenOption = None,
    audience: AudienceOption = None,
) -> None:
    """Approve a node that waits for approval (from another terminal while `agentgraph
    run` waits, or before `agentgraph resume`)."""
    value: Any = _NO_PAYLOAD
    if payload is not None:
        try:
            value = json.loads(payload)
        except ValueError as exc:
            raise _fail(f"--payload: not valid JSON: {exc}") from exc
    raise _Exit(_decide(run_id, node_id, "approved", comment, value, db, api, token, audience))


@app.command()
def reject(
    run_id: str,
    node_id: str,
    comment: CommentOption = None,
    db: DbOption = DEFAULT_DB,
    api: ApiOption = None,
    token: TokenOption = None,
    audience: AudienceOption = None,
) -> None:
    """Reject a node that waits for approval: it fails, and its on_error applies."""
    raise _Exit(
        _decide(run_id, node_id, "rejected", comment, _NO_PAYLOAD, db, api, token, audience)
    )


_NO_PAYLOAD: Any = object()


def _decide(
    run_id: str,
    node_id: str,
    decision: str,
    comment: str | None,
    payload: Any,
    db: str,
    api: str | None,
    token: str | None,
    audience: str | None,
) -> int:
    if api:
        _exit_api(api, token, audience)
        from agentgraph import cli_api

        return cli_api.decide(
            run_id,
            node_id,
            decision,
            comment=comment,
            payload=cli_api.NO_PAYLOAD if payload is _NO_PAYLOAD else payload,
            api=api,
            token=token,
            audience=audience,
            err=err,
        )
    _open_store("local", db).close()

    async def main() -> int:
        import getpass

        from agentgraph.core.approval import UNSET

        runtime = _open_local(db, 1)
        try:
            # Only the decision is written here: the process running the run (a waiting
            # `agentgraph run`, or a later `agentgraph resume`) carries the run on.
            record = await runtime.engine.decide_approval(
                run_id,
                node_id,
                decision,  # type: ignore[arg-type]
                f"local:{getpass.getuser()}",
                comment,
                UNSET if payload is _NO_PAYLOAD else payload,
                notify=False,
            )
        finally:
            runtime.store.close()
        err.print(
            f"node {node_id} of run {run_id}: {record.output.get('decision')} "
            f"({record.status.value}). A waiting `agentgraph run` continues at once; "
            f"if none is running: agentgraph resume {run_id}",
            highlight=False,
        )
        return 0

    return _run_async(main)


@app.command()
def redrive(
    run_id: str,
    workers: WorkersOption = None,
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
    tools: ToolsOption = None,
    limits: LimitsOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
    audience: AudienceOption = None,
) -> None:
    """Run a failed or cancelled run again from where it stopped: succeeded nodes keep
    their outputs; failed, cancelled and never-run nodes run again with fresh attempts."""
    if api:
        _exit_api(api, token, audience)
        from agentgraph import cli_api

        raise _Exit(cli_api.redrive(run_id, api=api, token=token, audience=audience, err=err))
    _open_store("local", db).close()

    async def main() -> int:
        runtime = _open_running(db, workers, tools, limits)
        async with _running(runtime):
            redriven, again = await runtime.engine.redrive(run_id)
            if redriven:
                err.print(
                    f"redriving run [bold]{run_id}[/]: {', '.join(again) or 'no node'} run again",
                    highlight=False,
                )
            return await _follow(runtime, run_id, as_json)

    raise _Exit(_run_async(main))


@app.command()
def graph(
    file: Annotated[Path, typer.Argument(help="Graph file (YAML or JSON).")],
    format: Annotated[str, typer.Option("--format", "-f", help="mermaid or ascii.")] = "ascii",
    tools: ToolsOption = None,
) -> None:
    """Draw a graph as Mermaid (for docs and GitHub) or as text."""
    if format not in ("mermaid", "ascii"):
        raise _fail(f"--format: expected 'mermaid' or 'ascii', found {format!r}")
    runtime = _open_local(":memory:", 1, tools)
    compiled = runtime.engine.compile(load_document(file))
    out.print(draw_graph(compiled, format), highlight=False, markup=False, soft_wrap=True)


@app.command()
def trace(
    run_id: str,
    node: Annotated[str | None, typer.Argument(help="Only this node's steps.")] = None,
    db: DbOption = DEFAULT_DB,
    backend: BackendOption = "local",
    api: ApiOption = None,
    token: TokenOption = None,
    audience: AudienceOption = None,
) -> None:
    """What ran: a flowchart of the nodes, and every model turn and tool call of agents
    with tools (arguments, result, duration, tokens, cost)."""
    from agentgraph import steps_view

    if api:
        _exit_api(api, token, audience)
        from agentgraph import cli_api

        code = cli_api.trace(
            run_id, node, api=api, token=token, audience=audience, err=err, out=out
        )
        raise _Exit(code)
    store = _open_store(backend, db)

    async def main() -> int:
        run = await store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        nodes = await store.list_nodes(run_id)
        if node is not None and node not in {n.node_id for n in nodes}:
            raise NodeNotFound(run_id, node)
        wanted = [n.node_id for n in nodes if node is None or n.node_id == node]
        found = await asyncio.gather(*(store.list_steps(run_id, n) for n in wanted))
        steps = dict(zip(wanted, found, strict=True))
        lines = steps_view.render(run, nodes, steps, steps_view.kinds_of(run.graph), node)
        out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
        return 0

    raise _Exit(_run_async(main))


@app.command("trace-view")
def trace_view(
    run_id: str,
    file: Annotated[
        Path | None,
        typer.Option(help="OTLP JSON lines file (default: $AGENTGRAPH_TRACE_FILE)."),
    ] = None,
) -> None:
    """A run's spans as a waterfall (runs traced with AGENTGRAPH_TRACE=file)."""
    from agentgraph.observability import tracing, waterfall

    path = file or Path(os.environ.get(tracing.ENV_TRACE_FILE) or tracing.DEFAULT_TRACE_FILE)
    if not path.exists():
        raise _fail(f"no trace file {path}: run with AGENTGRAPH_TRACE=file to write one")
    lines = waterfall.render(waterfall.run_spans(waterfall.read_spans(path), run_id))
    if not lines:
        raise _fail(f"no spans of run {run_id} in {path}", 1)
    out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)


def _exit_api(api: str | None, token: str | None, audience: str | None) -> None:
    """Commands on a deployed system go through its api, so they need its URL (and one
    way to authenticate at most)."""
    if not api:
        raise _fail(
            f"--backend gcp runs a graph through the deployed api: pass --api URL "
            f"(or set {names.ENV_API_URL})"
        )
    if token and audience:
        raise _fail("give --token or --audience, not both")


def main() -> None:
    """Console entry point: maps our exits and errors to exit codes."""
    try:
        _main()
    finally:
        # The SQLite stores the command opened are closed (the last connection folds the
        # WAL into the file); then the objects left are frozen: the interpreter's final
        # collection would walk every object of a process that imported google-genai,
        # about 170 ms of each command's wall time, to free memory the process's end
        # frees anyway. Output was written and flushed before.
        for store in _OPENED_STORES:
            with contextlib.suppress(Exception):
                store.close()
        _OPENED_STORES.clear()
        gc.freeze()


def _main() -> None:
    try:
        code = app(standalone_mode=False)  # returns the code of typer.Exit (130 on Ctrl-C)
        sys.exit(code if isinstance(code, int) else 0)
    except _Exit as exc:
        sys.exit(exc.code)
    except AgentgraphError as exc:  # the exit code is the errors table's (core/errors.py)
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(kind_of(exc).exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors: typer's own copy of click's, or click's
        import click

        if isinstance(exc, click.ClickException | typer.TyperException):
            exc.show()  # type: ignore[union-attr]
            sys.exit(getattr(exc, "exit_code", 2))
        raise


if __name__ == "__main__":
    main()
