"""The `agentgraph` command as a user runs it: exit codes, output, Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.waiting import eventually

ROOT = Path(__file__).parents[2]
TOOLS = str(ROOT / "tests" / "system" / "cli_tools.py")
# The demo graph's tools are not registered by importing agentgraph: a user names them.
DEMO_TOOLS = "agentgraph.tools.code_review"


def agentgraph(*args: str, db: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentgraph", *args, "--db", str(db)]
        if args[0]
        in {
            "run",
            "show",
            "resume",
            "logs",
            "runs",
            "cancel",
            "trace",
            "approve",
            "reject",
            "redrive",
        }
        else [sys.executable, "-m", "agentgraph", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "AGENTGRAPH_TOOLS": DEMO_TOOLS},
    )


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def test_validate_lists_a_cycle_an_unknown_parent_and_a_bad_template_at_once(
    tmp_path: Path,
) -> None:
    broken = write(
        tmp_path / "broken.yaml",
        {
            "name": "broken",
            "defaults": {"model": "echo"},
            "nodes": [
                {"id": "a", "after": ["c"], "tool": "extract_functions", "args": {"source": "x"}},
                {"id": "b", "after": ["a"], "prompt": "{{ nodes.a.output"},
                {"id": "c", "after": ["b", "sumarize"], "prompt": "hi"},
                {"id": "summarize", "prompt": "hi"},
            ],
        },
    )
    result = agentgraph("validate", str(broken), db=tmp_path / "db")
    assert result.returncode == 2
    assert "cycle: a -> b -> c -> a" in result.stderr
    assert (
        "nodes[2].after[1]: node 'c' waits for unknown node 'sumarize' (did you mean 'summarize'?)"
        in result.stderr
    )
    assert "nodes[1].prompt: does not parse" in result.stderr


def test_an_unknown_command_or_a_missing_argument_is_a_usage_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    unknown = agentgraph("lst", db=tmp_path / "db")
    assert unknown.returncode == 2
    assert "No such command 'lst'" in unknown.stderr and "Traceback" not in unknown.stderr
    missing = agentgraph("validate", db=tmp_path / "db")
    assert missing.returncode == 2
    assert "Missing argument" in missing.stderr and "Traceback" not in missing.stderr


def test_the_command_loads_with_the_collector_off_and_runs_nodes_with_it_on(
    tmp_path: Path,
) -> None:
    # What the CLI imported is frozen (no collection walks it again); the nodes of a run
    # still have their garbage collected.
    document = {"name": "gc", "nodes": [{"id": "state", "tool": "collector_state"}]}
    result = agentgraph(
        "run",
        str(write(tmp_path / "g.yaml", document)),
        "--tools",
        TOOLS,
        "--json",
        db=tmp_path / "db",
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)["outputs"]["state"]
    assert state["enabled"] is True
    assert state["frozen"] > 10_000  # about 100,000: the CLI, the engine, the backend


def test_validate_accepts_the_demo(tmp_path: Path) -> None:
    result = agentgraph("validate", "examples/code-review.yaml", db=tmp_path / "db")
    assert result.returncode == 0 and "5 nodes" in result.stderr


def test_run_json_prints_the_run_record_on_stdout_and_progress_on_stderr(tmp_path: Path) -> None:
    result = agentgraph(
        "run",
        "examples/code-review.yaml",
        "--set",
        "code=@examples/sample_code.py",
        "--json",
        db=tmp_path / "db",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "succeeded"
    assert [n["id"] for n in record["nodes"]] == [
        "extract",
        "issues",
        "complexity",
        "review",
        "suggest",
    ]
    assert record["outputs"]["suggest"]["score"] < 100
    assert "suggest" in result.stderr and "succeeded" in result.stderr
    node_lines = [line for line in result.stdout.splitlines() if line.startswith('    {"id": ')]
    assert [json.loads(line.rstrip(","))["id"] for line in node_lines] == [
        n["id"] for n in record["nodes"]
    ]  # a node per line, for grep

    show = agentgraph("show", record["run_id"], db=tmp_path / "db")
    assert show.returncode == 0 and "extract" in show.stdout and "suggest" in show.stdout
    logs = agentgraph("logs", record["run_id"], db=tmp_path / "db")
    assert logs.stdout.count("succeeded") == 6  # five nodes and the run


def test_invalid_input_exits_2_and_writes_no_run(tmp_path: Path) -> None:
    result = agentgraph(
        "run", "examples/code-review.yaml", "--input", '{"code": 3}', db=tmp_path / "db"
    )
    assert result.returncode == 2 and "input.code: 3 is not of type 'string'" in result.stderr
    assert agentgraph("runs", db=tmp_path / "db").stdout.strip() == ""


def test_a_failed_run_exits_1(tmp_path: Path) -> None:
    graph = write(
        tmp_path / "g.yaml",
        {
            "name": "bad",
            "nodes": [{"id": "x", "tool": "extract_functions", "args": {"source": "def ("}}],
        },
    )
    result = agentgraph("run", str(graph), db=tmp_path / "db")
    assert result.returncode == 1 and "does not parse" in result.stdout


def test_an_unknown_run_id_is_a_clear_error(tmp_path: Path) -> None:
    agentgraph("run", "examples/code-review.yaml", "--set", "code=x = 1", db=tmp_path / "db")
    result = agentgraph("show", "no-such-run", db=tmp_path / "db")
    assert result.returncode == 2 and "no run with id 'no-such-run'" in result.stderr


def test_graph_draws_mermaid_and_ascii(tmp_path: Path) -> None:
    mermaid = agentgraph(
        "graph", "examples/code-review.yaml", "--format", "mermaid", db=tmp_path / "db"
    )
    assert mermaid.stdout.startswith("flowchart TD") and "extract --> complexity" in mermaid.stdout
    ascii_art = agentgraph("graph", "examples/code-review.yaml", db=tmp_path / "db")
    assert "layer 0" in ascii_art.stdout and "[suggest]" in ascii_art.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_leaves_the_run_resumable_and_resume_keeps_finished_nodes(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    graph = write(
        tmp_path / "slow.yaml",
        {
            "name": "slow",
            "nodes": [
                {
                    "id": "quick",
                    "tool": "nap",
                    "args": {"seconds": 0, "marker": str(marker) + ".quick", "value": 1},
                },
                {
                    "id": "slow",
                    "after": ["quick"],
                    "tool": "nap",
                    "args": {
                        "seconds": 3,
                        "marker": str(marker) + ".slow",
                        "started": str(marker) + ".slow-started",
                        "value": 2,
                    },
                },
                {
                    "id": "last",
                    "after": ["slow"],
                    "tool": "nap",
                    "args": {"seconds": 0, "value": "{{ nodes.quick.output + nodes.slow.output }}"},
                },
            ],
        },
    )
    db = tmp_path / "db"
    process = subprocess.Popen(
        [sys.executable, "-m", "agentgraph", "run", str(graph), "--db", str(db), "--tools", TOOLS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background jobs inherit SIGINT ignored; a terminal's Ctrl-C does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    eventually((tmp_path / "marker.slow-started").exists)  # `slow` is mid-call
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "agentgraph resume" in stderr
    run_id = stderr.split("agentgraph resume", 1)[1].split()[0]

    resumed = agentgraph("resume", run_id, "--tools", TOOLS, "--json", db=db)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads(resumed.stdout)
    assert record["status"] == "succeeded" and record["outputs"] == {"last": 3}
    assert (tmp_path / "marker.quick").read_text() == "x"  # finished before Ctrl-C: not re-run
    assert (
        tmp_path / "marker.slow"
    ).read_text() == "x"  # interrupted mid-call: ran once to the end
    assert (tmp_path / "marker.slow-started").read_text() == "xx"  # and was started again


def test_progress_in_a_log_is_a_line_per_node_that_ends_not_per_event(tmp_path: Path) -> None:
    nodes = [{"id": "a", "model": "echo", "prompt": "first"}] + [
        {"id": f"n{i}", "model": "echo", "prompt": f"node {i}", "after": ["a"]} for i in range(20)
    ]
    graph = write(tmp_path / "wide.yaml", {"name": "wide", "nodes": nodes})
    result = agentgraph("run", str(graph), "--json", db=tmp_path / "db")
    assert result.returncode == 0, result.stderr
    node_lines = [line.split() for line in result.stderr.splitlines() if line[:2].isdigit()]
    ended = sorted(words[1] for words in node_lines if words[1] != "run")
    assert ended == sorted(n["id"] for n in nodes)  # each node once, when it ended
    assert all(words[2] == "succeeded" for words in node_lines if words[1] != "run")


def test_trace_shows_the_flowchart_and_every_turn_and_tool_call_of_an_agent(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    prompt = "\n".join(
        [
            "Write.",
            '@call 1 word_count {"text": "durable agents"}',
            '@call 1 shout {"text": "hi"}',
            '@call 2 shout {"text": ""}',
        ]
    )
    document = {
        "name": "traced",
        "defaults": {"model": "echo"},
        "nodes": [
            {"id": "start", "tool": "nap", "args": {"seconds": 0, "value": "go"}},
            {
                "id": "writer",
                "after": ["start"],
                "tools": ["word_count", "shout"],
                "prompt": prompt,
            },
            {"id": "editor", "after": ["start", "writer"], "prompt": "{{ nodes.writer.output }}"},
        ],
    }
    ran = agentgraph(
        "run", str(write(tmp_path / "g.yaml", document)), "--tools", TOOLS, "--json", db=db
    )
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]

    traced = agentgraph("trace", run_id, db=db)

    assert traced.returncode == 0, traced.stderr
    lines = traced.stdout.splitlines()
    assert lines[0].startswith(f"run {run_id} | traced | succeeded | ")
    flow = lines[lines.index("flowchart") + 1 : lines.index("steps") - 1]
    assert [line.split(" | ")[0] for line in flow if not line.startswith("   |")] == [
        "  (start) succeeded",
        "  (writer) succeeded",
        "  (editor) succeeded",
    ]
    assert "   |--> writer" in flow and flow.count("   |--> editor") == 2
    assert "3 turns | 3 tool calls" in flow[3]
    assert flow[-1].endswith("<-- start, writer")
    steps = lines[lines.index("steps") + 1 :]
    assert steps[0].startswith("  writer: 6 steps | tokens ")
    assert steps[1].startswith("  |- #0 turn 1 | model echo | ")
    assert steps[2] == '  |    calls word_count(text="durable agents"), shout(text="hi")'
    assert any(
        line.startswith('  |- #1 turn 1 | tool word_count(text="durable agents") |')
        and line.endswith("| -> 2")
        for line in steps
    )
    assert any(line.endswith("| error ValueError: nothing to shout") for line in steps)
    assert steps[-1] == '       answer "shout: {\\"error\\": \\"ValueError: nothing to shout\\"}"'

    one = agentgraph("trace", run_id, "writer", db=db)
    assert one.returncode == 0 and one.stdout.splitlines()[-1] == steps[-1]
    unknown = agentgraph("trace", run_id, "nope", db=db)
    assert unknown.returncode == 2 and "has no node 'nope'" in unknown.stderr


def test_the_tools_example_runs_offline(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    example = ("examples/word-tools.yaml", "--tools", "examples/word_tools.py")
    ran = agentgraph("run", *example, "--set", "text=durable agents", "--json", db=db)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert run["outputs"] == {"editor": 'Edit: shout: {"error": "ValueError: nothing to shout"}'}
    traced = agentgraph("trace", run["run_id"], "writer", db=db)
    assert '| tool word_count(text="durable agents") |' in traced.stdout


def test_the_delegates_example_runs_offline(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    example = ("examples/delegates.yaml", "--tools", "examples/word_tools.py")
    ran = agentgraph("run", *example, "--json", db=db)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert run["outputs"] == {"lead": 'writer: {"result": "Improve the draft."}'}
    shown = agentgraph("show", run["run_id"], db=db)
    for child in ("lead/researcher[1]", "lead/writer[2]", "lead/writer[4]"):
        assert child in shown.stdout
    traced = agentgraph("trace", run["run_id"], "lead/researcher[1]", db=db)
    assert '| tool word_count(text="durable agents as tools") |' in traced.stdout


# ---- approval and redrive ------------------------------------------------------------------


def _gated(tmp_path: Path) -> Path:
    return write(
        tmp_path / "gated.yaml",
        {
            "name": "gated",
            "nodes": [
                {"id": "draft", "tool": "nap", "args": {"seconds": 0, "value": "v1"}},
                {
                    "id": "review",
                    "after": ["draft"],
                    "approval": {"message": "publish {{ nodes.draft.output }}?"},
                },
                {
                    "id": "publish",
                    "after": ["review"],
                    "tool": "nap",
                    "args": {"seconds": 0, "value": "{{ nodes.review.output.payload }}"},
                },
            ],
        },
    )


def _start_waiting_run(graph: Path, db: Path) -> tuple[subprocess.Popen[str], list[str], str]:
    """`agentgraph run` in the background, until it prints the approval commands; the
    process, its stderr lines so far, and the run id."""
    import threading

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentgraph",
            "run",
            str(graph),
            "--db",
            str(db),
            "--json",
            "--tools",
            TOOLS,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    lines: list[str] = []
    assert process.stderr is not None
    stderr = process.stderr
    threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")), daemon=True).start()
    eventually(lambda: any("approve:  agentgraph approve" in line for line in lines))
    hint = next(line for line in lines if "approve:  agentgraph approve" in line)
    run_id = hint.split("agentgraph approve", 1)[1].split()[0]
    assert any("node review waits for approval: publish v1?" in line for line in lines)
    assert any(f"reject:   agentgraph reject {run_id} review" in line for line in lines)
    return process, lines, run_id


def test_approve_from_another_terminal_lets_the_waiting_run_finish(tmp_path: Path) -> None:
    db = tmp_path / "db"
    process, _, run_id = _start_waiting_run(_gated(tmp_path), db)

    approved = agentgraph(
        "approve", run_id, "review", "--comment", "ok", "--payload", '"v2"', db=db
    )
    again = agentgraph("approve", run_id, "review", db=db)
    other = agentgraph("reject", run_id, "review", db=db)
    stdout, _ = process.communicate(timeout=60)

    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stderr
    assert again.returncode == 0, "the same decision again is fine"
    assert other.returncode == 2 and "already approved" in other.stderr
    assert process.returncode == 0
    record = json.loads(stdout)
    assert record["status"] == "succeeded" and record["outputs"] == {"publish": "v2"}
    review = next(n for n in record["nodes"] if n["id"] == "review")
    assert review["output"]["comment"] == "ok" and review["output"]["by"].startswith("local:")


def test_reject_from_another_terminal_fails_the_waiting_run(tmp_path: Path) -> None:
    db = tmp_path / "db"
    process, _, run_id = _start_waiting_run(_gated(tmp_path), db)

    rejected = agentgraph("reject", run_id, "review", "--comment", "not now", db=db)
    stdout, _ = process.communicate(timeout=60)

    assert rejected.returncode == 0, rejected.stderr
    assert process.returncode == 1
    record = json.loads(stdout)
    review = next(n for n in record["nodes"] if n["id"] == "review")
    assert review["error"]["type"] == "ApprovalRejected"
    assert review["error"]["message"].endswith(": not now")


def test_a_failed_run_is_redriven_after_the_fix_without_rerunning_what_succeeded(
    tmp_path: Path,
) -> None:
    broken, marks = tmp_path / "broken", tmp_path / "mark"
    broken.write_text("yes")
    graph = write(
        tmp_path / "fragile.yaml",
        {
            "name": "fragile",
            "nodes": [
                {
                    "id": "first",
                    "tool": "nap",
                    "args": {"seconds": 0, "marker": f"{marks}.first", "value": 1},
                },
                {
                    "id": "second",
                    "after": ["first"],
                    "tool": "fragile",
                    "args": {"broken": str(broken), "marker": f"{marks}.second", "value": 2},
                },
                {
                    "id": "third",
                    "after": ["second"],
                    "tool": "nap",
                    "args": {
                        "seconds": 0,
                        "value": "{{ nodes.first.output + nodes.second.output }}",
                    },
                },
            ],
        },
    )
    db = tmp_path / "db"
    failed = agentgraph("run", str(graph), "--tools", TOOLS, "--json", db=db)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]

    resumed = agentgraph("resume", run_id, "--tools", TOOLS, db=db)
    assert resumed.returncode == 1
    assert f"agentgraph redrive {run_id}" in resumed.stderr

    broken.unlink()  # the fix
    redriven = agentgraph("redrive", run_id, "--tools", TOOLS, "--json", db=db)
    assert redriven.returncode == 0, redriven.stderr
    record = json.loads(redriven.stdout)
    assert record["status"] == "succeeded" and record["outputs"] == {"third": 3}
    assert Path(f"{marks}.first").read_text() == "x", "succeeded before: not run again"
    assert Path(f"{marks}.second").read_text() == "xx"
    again = agentgraph("redrive", run_id, "--tools", TOOLS, db=db)
    assert again.returncode == 2 and "only a failed or cancelled run" in again.stderr


def test_a_map_whose_item_failed_is_redriven_rerunning_only_that_item(tmp_path: Path) -> None:
    broken, marks = tmp_path / "broken", tmp_path / "mark"
    Path(f"{broken}.2").write_text("yes")  # only item 2 is broken
    graph = write(
        tmp_path / "mapped.yaml",
        {
            "name": "mapped",
            "nodes": [
                {"id": "src", "tool": "nap", "args": {"seconds": 0, "value": [0, 1, 2, 3]}},
                {
                    "id": "each",
                    "after": ["src"],
                    "map": "nodes.src.output",
                    "max_concurrency": 2,
                    "tool": "fragile",
                    "args": {
                        "broken": f"{broken}.{{{{ item }}}}",
                        "marker": f"{marks}.{{{{ item }}}}",
                        "value": "{{ item * 10 }}",
                    },
                },
            ],
        },
    )
    db = tmp_path / "db"
    failed = agentgraph("run", str(graph), "--tools", TOOLS, "--json", db=db)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    assert Path(f"{marks}.0").read_text() == "x"

    Path(f"{broken}.2").unlink()  # the fix
    redriven = agentgraph("redrive", run_id, "--tools", TOOLS, "--json", db=db)
    assert redriven.returncode == 0, redriven.stderr
    record = json.loads(redriven.stdout)
    assert record["status"] == "succeeded" and record["outputs"] == {"each": [0, 10, 20, 30]}
    assert Path(f"{marks}.0").read_text() == "x", "item 0 succeeded before: not run again"
    assert Path(f"{marks}.2").read_text() == "xx"
    assert Path(f"{marks}.3").read_text() == "x"
