"""The bench's per-document write counting (bench/ops_log.py): a sliding 1 s window."""

from __future__ import annotations

import json
from pathlib import Path

from bench import ops_log


def test_the_most_writes_in_any_one_second_window_slides_over_bucket_edges() -> None:
    # 3 writes at 0.6-0.9 and 3 at 1.0-1.3: buckets of whole seconds would say 3
    times = [0.6, 0.7, 0.9, 1.0, 1.1, 1.3, 2.5]
    assert ops_log.max_writes_per_second(times) == 6
    assert ops_log.max_writes_per_second([0.0, 1.0, 2.0]) == 1
    assert ops_log.max_writes_per_second([]) == 0


def test_the_hottest_document_and_totals_come_from_every_process_log(tmp_path: Path) -> None:
    lines = {
        "1.jsonl": [{"t": 10.0, "w": ["runs/r", "runs/r/nodes/a"]}, {"t": 10.2, "r": 3}],
        "2.jsonl": [{"t": 10.5, "w": ["runs/r", "runs/r/events/e"]}, {"t": 99.0, "w": ["x"]}],
    }
    for name, entries in lines.items():
        (tmp_path / name).write_text("".join(json.dumps(e) + "\n" for e in entries))
    logged = ops_log.entries(tmp_path, since=0, until=50)

    assert ops_log.hottest(logged) == ("runs/r", 2, 2)
    top = ops_log.hottest_documents(logged, 5)
    assert top[0] == ("runs/r", 2, 2)  # then the others, hottest first
    assert sorted(top[1:]) == [("runs/r/events/e", 1, 1), ("runs/r/nodes/a", 1, 1)]
    assert ops_log.totals(logged) == {"writes": 4, "reads": 3}
