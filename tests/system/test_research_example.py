"""examples/research.yaml as a new user runs it: one command, offline, on the local backend;
the run waits for approval, prints the command, and finishes when another process approves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from tests.system.test_cli import ROOT, agentgraph
from tests.waiting import eventually

EXAMPLE = "examples/research.yaml"
TOPIC = "durable agent runtimes"


def test_the_research_example_validates(tmp_path: Path) -> None:
    result = agentgraph("validate", EXAMPLE, db=tmp_path / "db")
    assert result.returncode == 0, result.stderr


def test_the_research_example_plans_delegates_loops_and_waits_for_its_approval(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            *("agentgraph", "run", EXAMPLE, "--set", f"topic={TOPIC}"),
            *("--json", "--db", str(db)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300", "NO_COLOR": "1"},
    )
    lines: list[str] = []
    assert process.stderr is not None
    stderr = process.stderr
    threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")), daemon=True).start()
    eventually(lambda: any("approve:  agentgraph approve" in line for line in lines), timeout=60)
    hint = next(line for line in lines if "approve:  agentgraph approve" in line)
    run_id, node = hint.split("agentgraph approve", 1)[1].split()[:2]
    assert node == "answer"

    approved = agentgraph("approve", run_id, "answer", "--comment", "ship it", db=db)
    stdout, _ = process.communicate(timeout=60)

    assert approved.returncode == 0, approved.stderr
    assert process.returncode == 0, "".join(lines)
    record = json.loads(stdout)
    assert record["status"] == "succeeded"
    answer = record["outputs"]["answer"]
    assert answer["decision"] == "approved" and answer["comment"] == "ship it"
    assert answer["payload"].startswith(f"Round 2 answer on {TOPIC}, from 4 findings:")
    assert "- Address the critic: Add the costs and a worked example." in answer["payload"]
    nodes = {n["id"]: n for n in record["nodes"]}
    # two rounds: the critic is satisfied in the second; the planner planned 3 then 4 tasks,
    # each run by the profile it named, in parallel
    assert "rounds@2" in nodes and "rounds@3" not in nodes
    assert nodes["rounds@1/critic"]["output"]["approved"] is False
    assert nodes["rounds@2/critic"]["output"]["approved"] is True
    assert [t["agent"] for t in nodes["rounds@2/plan"]["output"]["tasks"]] == [
        "researcher",
        "skeptic",
        "writer",
        "researcher",
    ]
    assert len(nodes["rounds@1/research"]["output"]) == 3
    assert len(nodes["rounds@2/research"]["output"]) == 4
    assert all(nodes[f"rounds@2/research[{i}]"]["status"] == "succeeded" for i in range(4))
