"""The Cloud Storage adapter of the runs' scratch space, against a local Cloud Storage
emulator (gcp-storage-emulator, in memory, started here) through google-cloud-storage:
the same tools, the same rules, objects at gs://BUCKET/runs/<run_id>/<path>."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gcp_storage_emulator import server as emulator
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage  # type: ignore[attr-defined]  # untyped

from agentgraph.backends.gcp.scratch import GcsScratch
from agentgraph.core.errors import ToolRefused
from agentgraph.tools.context import ToolContext, bound
from agentgraph.tools.run_files import read_run_file, write_run_file
from emulator.processes import free_port


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="scratch")
    server.start()
    try:
        yield storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
        )
    finally:
        server.stop()


@pytest.fixture
def space(client: Any) -> GcsScratch:
    return GcsScratch(client, "scratch")


async def test_files_round_trip_under_the_runs_prefix(space: GcsScratch, client: Any) -> None:
    with bound(ToolContext("run-a", "n", 1, space)):
        written = await write_run_file("out/./report.md", "# hello")
        read = await read_run_file("out/report.md")
    assert written == {
        "path": "out/report.md",
        "bytes": 7,
        "location": "gs://scratch/runs/run-a/out/report.md",
    }
    assert read == {"path": "out/report.md", "bytes": 7, "text": "# hello"}
    names = [b.name for b in client.list_blobs("scratch", prefix="runs/run-a/")]
    assert names == ["runs/run-a/out/report.md"]


async def test_a_rewrite_replaces_and_the_total_counts_it_once(
    space: GcsScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGRAPH_RUN_FILES_MAX_TOTAL_BYTES", "10")
    with bound(ToolContext("run-b", "n", 1, space)):
        await write_run_file("a.txt", "x" * 6)
        await write_run_file("a.txt", "y" * 8)
        assert (await read_run_file("a.txt"))["text"] == "y" * 8
        with pytest.raises(ToolRefused, match="would total 11 bytes"):
            await write_run_file("b.txt", "zzz")
    assert await space.sizes("run-b") == {"a.txt": 8}


async def test_another_runs_file_is_not_there(space: GcsScratch) -> None:
    with bound(ToolContext("run-c", "n", 1, space)):
        await write_run_file("mine.txt", "c")
    with (
        bound(ToolContext("run-d", "n", 1, space)),
        pytest.raises(FileNotFoundError, match=r"this run has no file 'mine.txt'"),
    ):
        await read_run_file("mine.txt")


async def test_a_read_stops_past_the_cap(space: GcsScratch) -> None:
    await space.write("run-e", "big.bin", b"x" * 100)
    assert len(await space.read("run-e", "big.bin", 10)) == 11
