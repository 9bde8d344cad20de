"""`agentgraph logs`, `show` and `graph` on runs that grow, as a user runs them: a 1,000-item
map reads as one line per change of the map, with counts, and expands on demand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.system.test_cli import TOOLS, agentgraph, write

N = 1000


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A finished run of a 1,000-item map where items 10 and 500 fail (and the map goes on)."""
    tmp = tmp_path_factory.mktemp("big")
    graph = write(
        tmp / "big.yaml",
        {
            "name": "big",
            "nodes": [
                {
                    "id": "review",
                    "map": "input.words",
                    "on_error": "continue",
                    "tool": "shout",
                    "args": {"text": "{{ item }}"},
                },
                {
                    "id": "report",
                    "after": ["review"],
                    "tool": "word_count",
                    "args": {"text": "{{ nodes.review.output | join(' ') }}"},
                },
            ],
        },
    )
    words = ["" if i in (10, 500) else f"w{i}" for i in range(N)]
    (tmp / "in.json").write_text(json.dumps({"words": words}))
    db = tmp / "db"
    ran = agentgraph(
        "run",
        str(graph),
        "-i",
        f"@{tmp / 'in.json'}",
        "--tools",
        TOOLS,
        "--json",
        db=db,
        timeout=180,
    )
    assert ran.returncode == 0, ran.stderr
    return db, json.loads(ran.stdout)["run_id"], ran.stderr


def test_logs_show_a_1000_item_map_as_one_line_per_change_with_counts(
    big_run: tuple[Path, str, str],
) -> None:
    db, run_id, _ = big_run
    logs = agentgraph("logs", run_id, db=db)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert len(lines) < 20, logs.stdout
    assert any(line.endswith("review: 1,000 items started") for line in lines)
    assert any(line.endswith("review: 1,000 items: 2 failed, 998 succeeded") for line in lines)
    assert sum("review[10]" in line and "nothing to shout" in line for line in lines) == 1
    assert not any("review[11]" in line for line in lines)
    assert "--expand review (or --all)" in logs.stderr


def test_logs_expand_a_map_on_demand(big_run: tuple[Path, str, str]) -> None:
    db, run_id, _ = big_run
    for flag in (["--expand", "review"], ["--all"]):
        logs = agentgraph("logs", run_id, *flag, db=db)
        assert logs.returncode == 0, logs.stderr
        assert (
            sum(" review[" in line and "succeeded" in line for line in logs.stdout.splitlines())
            == 998
        )
        assert "items started" not in logs.stdout


def test_show_groups_the_map_and_expands_it_on_demand(big_run: tuple[Path, str, str]) -> None:
    db, run_id, _ = big_run
    shown = agentgraph("show", run_id, db=db)
    assert "1,000 items: 2 failed, 998 succeeded" in shown.stdout
    assert "review[10] failed" in shown.stdout and "review[11]" not in shown.stdout
    assert "--expand review (or --all)" in shown.stdout
    expanded = agentgraph("show", run_id, "--expand", "review", db=db)
    assert "review[11] succeeded" in expanded.stdout and "1,000 items" not in expanded.stdout


def test_show_marks_each_loop_iteration(tmp_path: Path) -> None:
    graph = write(
        tmp_path / "loop.yaml",
        {
            "name": "loop",
            "nodes": [
                {
                    "id": "draft",
                    "loop": {"until": "output >= 3", "max_iterations": 5},
                    "tool": "nap",
                    "args": {"seconds": 0, "value": "{{ loop.iteration }}"},
                }
            ],
        },
    )
    db = tmp_path / "db"
    ran = agentgraph("run", str(graph), "--tools", TOOLS, "--json", db=db)
    run_id = json.loads(ran.stdout)["run_id"]
    shown = agentgraph("show", run_id, db=db)
    for k in (1, 2, 3):
        assert f"draft@{k} succeeded  iteration {k}" in shown.stdout


def test_graph_draws_the_research_example_grouped(tmp_path: Path) -> None:
    drawn = agentgraph("graph", "examples/research.yaml", "--format", "mermaid", db=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    lines = drawn.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert 'subgraph rounds["rounds: subgraph of 4 · loop until output.approved · max 3"]' in (
        drawn.stdout
    )
    assert (
        '        rounds__research[["research<br/>agent item.agent<br/>'
        'map over nodes.plan.output.tasks · max_concurrency 4"]]'
    ) in lines
    assert "    rounds --> answer" in lines
    text = agentgraph("graph", "examples/research.yaml", db=tmp_path)
    assert "  [rounds] subgraph of 4 · loop until output.approved · max 3 ──▶ answer" in text.stdout


def test_the_progress_of_run_in_a_log_shows_the_map_as_group_lines(
    big_run: tuple[Path, str, str],
) -> None:
    _, _, progress = big_run
    lines = progress.splitlines()
    assert len(lines) < 20, progress
    assert any(line.endswith("review: 1,000 items started") for line in lines)
    assert any(line.endswith("review: 1,000 items: 2 failed, 998 succeeded") for line in lines)
    assert sum("nothing to shout" in line for line in lines) == 2
