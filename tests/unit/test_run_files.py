"""read_run_file / write_run_file: relative normalised paths, per-file and per-run caps,
one space per run (the engine says which), on the local folder adapter."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgraph.core.errors import ToolRefused
from agentgraph.tools import default_registry
from agentgraph.tools.context import NoRunContext, ToolContext, bound
from agentgraph.tools.run_files import LocalScratch, normalise, read_run_file, write_run_file


@pytest.fixture
def space(tmp_path: Path) -> LocalScratch:
    return LocalScratch(tmp_path / "files")


@pytest.fixture
def in_run(space: LocalScratch) -> Iterator[LocalScratch]:
    with bound(ToolContext("run-1", "node", 1, space)):
        yield space


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.txt", "a.txt"),
        ("reports/2026/summary.md", "reports/2026/summary.md"),
        ("a//b/./c.txt", "a/b/c.txt"),
        ("./x", "x"),
        ("dir/", "dir"),
    ],
)
def test_paths_are_normalised(path: str, expected: str) -> None:
    assert normalise(path) == expected


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/..", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:x", "absolute"),
        ("a\\b", "backslash"),
        ("a\0b", "NUL"),
        ("", "non-empty"),
        (".", "names no file"),
        ("a b.txt", "letters, digits"),
        ("x/" * 17 + "f", "folders deep"),
        ("x" * 513, "the limit is 512"),
        (3, "non-empty string"),
    ],
)
def test_paths_that_could_leave_the_space_are_refused(path: object, why: str) -> None:
    with pytest.raises(ToolRefused, match=why.replace("\\", "\\\\")):
        normalise(path)


def test_the_tools_are_registered() -> None:
    assert {"read_run_file", "write_run_file"} <= set(default_registry.names())


async def test_outside_a_run_the_tools_say_they_need_one() -> None:
    with pytest.raises(NoRunContext, match="only inside a run"):
        await read_run_file("a.txt")


async def test_without_a_scratch_space_the_tools_say_how_to_get_one() -> None:
    with (
        bound(ToolContext("run-1", "node", 1, None)),
        pytest.raises(ToolRefused, match="AGENTGRAPH_RUN_FILES_BUCKET"),
    ):
        await write_run_file("a.txt", "x")


async def test_text_written_is_read_back_and_lands_in_the_runs_folder(
    in_run: LocalScratch, tmp_path: Path
) -> None:
    written = await write_run_file("notes/./a.txt", "héllo")
    assert written == {
        "path": "notes/a.txt",
        "bytes": 6,
        "location": f"{tmp_path / 'files' / 'run-1' / 'notes' / 'a.txt'}",
    }
    assert await read_run_file("notes/a.txt") == {
        "path": "notes/a.txt",
        "bytes": 6,
        "text": "héllo",
    }
    assert (tmp_path / "files" / "run-1" / "notes" / "a.txt").read_text() == "héllo"


async def test_binary_goes_both_ways_as_base64(in_run: LocalScratch) -> None:
    blob = bytes(range(256))
    await write_run_file("b.bin", base64.b64encode(blob).decode(), encoding="base64")
    read = await read_run_file("b.bin", encoding="base64")
    assert base64.b64decode(read["base64"]) == blob
    with pytest.raises(ToolRefused, match="not UTF-8 text"):
        await read_run_file("b.bin")


async def test_a_rewrite_replaces_the_file_whole(in_run: LocalScratch) -> None:
    await write_run_file("a.txt", "a long first version")
    await write_run_file("a.txt", "short")
    assert (await read_run_file("a.txt"))["text"] == "short"
    assert await in_run.sizes("run-1") == {"a.txt": 5}


async def test_runs_do_not_see_each_others_files(space: LocalScratch) -> None:
    with bound(ToolContext("run-1", "n", 1, space)):
        await write_run_file("secret.txt", "mine")
    with (
        bound(ToolContext("run-2", "n", 1, space)),
        pytest.raises(FileNotFoundError, match=r"this run has no file 'secret.txt'"),
    ):
        await read_run_file("secret.txt")


async def test_a_file_over_the_cap_is_refused(
    in_run: LocalScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGRAPH_RUN_FILE_MAX_BYTES", "10")
    await write_run_file("ok.txt", "x" * 10)
    with pytest.raises(ToolRefused, match="11 bytes; a file may have 10"):
        await write_run_file("big.txt", "x" * 11)


async def test_the_runs_total_is_capped_counting_a_replaced_file_once(
    in_run: LocalScratch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGRAPH_RUN_FILES_MAX_TOTAL_BYTES", "20")
    await write_run_file("a.txt", "x" * 10)
    await write_run_file("b.txt", "x" * 10)
    await write_run_file("b.txt", "y" * 10)  # a replacement, not an addition
    with pytest.raises(ToolRefused, match="would total 21 bytes; the limit is 20"):
        await write_run_file("c.txt", "z")


async def test_a_symlink_planted_in_the_folder_does_not_lead_out(
    in_run: LocalScratch, tmp_path: Path
) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    folder = tmp_path / "files" / "run-1"
    folder.mkdir(parents=True)
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ToolRefused, match="leads out of the run's folder"):
        await read_run_file("link.txt")


def test_the_local_space_lies_beside_the_sqlite_file_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTGRAPH_RUN_FILES", raising=False)
    assert LocalScratch.next_to(str(tmp_path / "runs.db")).root() == tmp_path / "runs.db.files"
    assert LocalScratch.next_to(":memory:").root().name.startswith("agentgraph-run-files-")
    monkeypatch.setenv("AGENTGRAPH_RUN_FILES", str(tmp_path / "elsewhere"))
    assert LocalScratch.next_to(str(tmp_path / "runs.db")).root() == tmp_path / "elsewhere"
