"""The benchmark's bookkeeping: the dated price file, the cost arithmetic and the results
table it writes into docs/benchmarks.md. No timing is asserted anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run
from bench.emulator_bench import FIGURES, chain_graph, cost_per_node, layered_graph, load_prices
from bench.measure import EMULATOR_FIGURES


def test_price_file_is_dated_and_names_its_sources() -> None:
    prices = load_prices()
    assert prices["as_of"] and prices["currency"] == "USD"
    assert all(url.startswith("https://cloud.google.com/") for url in prices["urls"].values())


def test_cost_per_node_adds_each_service_at_list_price() -> None:
    prices = load_prices()
    per_node = {"reads": 2.0, "writes": 5.0, "publishes": 2.0, "tasks": 0.0, "invocations": 2.0}
    cost = cost_per_node(per_node, 0.0, prices)
    fs = prices["firestore"]
    assert cost["firestore"] == pytest.approx(
        (2 * fs["read_per_100k"] + 5 * fs["write_per_100k"]) / 1e5
    )
    assert cost["cloud_tasks"] == 0
    assert cost["functions_compute"] == 0
    assert cost["functions_requests"] == pytest.approx(2 * 0.40 / 1e6)
    assert cost["pubsub"] == pytest.approx(2 * 2 * 1000 / 2**40 * 40.0)


def test_emulator_bench_provides_every_emulator_key() -> None:
    assert [f.key for f in FIGURES] == [f.key for f in EMULATOR_FIGURES]


def test_benchmark_graphs_have_the_advertised_sizes() -> None:
    assert len(chain_graph(20)["nodes"]) == 20
    assert len(layered_graph(100, 20)["nodes"]) == 2000


def test_results_table_is_rewritten_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\nbefore\n{run.DOC_BEGIN}\nold table\n{run.DOC_END}\nafter\n")
    assert run.rewrite_doc(doc, "new table")
    assert doc.read_text() == (
        f"# Title\n\nbefore\n{run.DOC_BEGIN}\nnew table\n{run.DOC_END}\nafter\n"
    )


def test_a_doc_without_markers_is_left_alone(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("no markers\n")
    assert not run.rewrite_doc(doc, "table")
    assert doc.read_text() == "no markers\n"


def test_markdown_table_lists_every_key_with_reasons_for_nulls() -> None:
    run.register_emulator_bench()
    declared = {f.key: f for m in run.REGISTRY.values() for f in m.figures}
    results = {key: None for key in run.KEYS}
    results.update(
        emulator_edge_ms=110.0,
        emulator_edge_floor_ms=100.0,
        machine={"cpu": "cpu", "cores": 2, "ram_gb": 4, "python": "py", "os": "os"},
        date="2026-01-01T00:00:00+00:00",
        notes={"local_ms_per_node": "not run"},
        details={"repeat": 5, "versions": {"agentgraph": "0"}},
    )
    text = run.markdown(declared, results)
    for key in run.KEYS:
        assert f"`{key}`" in text
    assert "1.10x floor | met" in text
    assert "`local_ms_per_node` is null: not run" in text
