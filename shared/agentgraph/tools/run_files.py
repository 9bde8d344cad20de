"""The built-in `read_run_file` / `write_run_file` tools: a scratch space per run, for
passing artefacts between nodes that are too large (or too binary) for outputs.

Where the files are: a folder on the local backend (`<db>.files/<run_id>/` next to the
SQLite file, or `AGENTGRAPH_RUN_FILES/<run_id>/`), a Cloud Storage prefix on GCP
(`gs://$AGENTGRAPH_RUN_FILES_BUCKET/runs/<run_id>/`, backends/gcp/scratch.py). The
engine hands the space to the tool with the run id (tools/context.py): a graph or a
model names only a path, never a run, so one run cannot read another's files.

What is guaranteed:
- Paths are relative and normalised: `/`-separated segments of letters, digits, `.`,
  `_` and `-`; no `..`, no absolute path, no backslash, at most 16 segments and 512
  characters. `a//b/./c.txt` is `a/b/c.txt`; `../x`, `/etc/x`, `C:x` are refused.
- A file is at most `AGENTGRAPH_RUN_FILE_MAX_BYTES` (default 8 MiB: a read returns it
  as a node output, whose limit is 10 MiB) and a run's files together at most
  `AGENTGRAPH_RUN_FILES_MAX_TOTAL_BYTES` (default 256 MiB). The total is checked before
  each write, so writers racing in one run can overshoot it by their own files.
- A write replaces the file whole (readers see the old or the new content).
Refusals raise `ToolRefused`; a missing file raises FileNotFoundError (permanent).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentgraph.core.errors import ToolRefused
from agentgraph.core.names import (
    ENV_RUN_FILE_MAX_BYTES,
    ENV_RUN_FILES,
    ENV_RUN_FILES_MAX_TOTAL_BYTES,
)
from agentgraph.tools import tool
from agentgraph.tools.context import ScratchSpace, tool_context

DEFAULT_FILE_BYTES = 8 * 1024 * 1024
DEFAULT_TOTAL_BYTES = 256 * 1024 * 1024
MAX_PATH_CHARS = 512
MAX_SEGMENTS = 16
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

Encoding = Literal["text", "base64"]


@dataclass(frozen=True)
class Caps:
    file_bytes: int = DEFAULT_FILE_BYTES
    total_bytes: int = DEFAULT_TOTAL_BYTES

    @classmethod
    def from_env(cls) -> Caps:
        return cls(
            int(os.environ.get(ENV_RUN_FILE_MAX_BYTES) or DEFAULT_FILE_BYTES),
            int(os.environ.get(ENV_RUN_FILES_MAX_TOTAL_BYTES) or DEFAULT_TOTAL_BYTES),
        )


def normalise(path: Any) -> str:
    """The canonical relative form of a scratch path, or ToolRefused saying why not."""
    if not isinstance(path, str) or not path.strip():
        raise ToolRefused(f"path must be a non-empty string, got {path!r}")
    if len(path) > MAX_PATH_CHARS:
        raise ToolRefused(f"path is {len(path)} characters; the limit is {MAX_PATH_CHARS}")
    if "\\" in path or "\0" in path:
        raise ToolRefused(f"path {path!r}: use '/' between folders (no backslash, no NUL)")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ToolRefused(f"path {path!r} is absolute; paths are relative to the run's space")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise ToolRefused(f"path {path!r} climbs out with '..'; paths stay in the run's space")
    if not segments:
        raise ToolRefused(f"path {path!r} names no file")
    if len(segments) > MAX_SEGMENTS:
        raise ToolRefused(f"path {path!r} is {len(segments)} folders deep; the limit is 16")
    for segment in segments:
        if not _SEGMENT.match(segment):
            raise ToolRefused(
                f"path {path!r}: segment {segment!r} may use only letters, digits, '.', '_', '-'"
            )
    return "/".join(segments)


def _scratch() -> tuple[str, ScratchSpace]:
    context = tool_context()
    if context.scratch is None:
        raise ToolRefused(
            "this deployment has no scratch space for run files: set "
            "AGENTGRAPH_RUN_FILES_BUCKET on the exec functions (Terraform does)"
        )
    if not _RUN_ID.match(context.run_id):
        raise ToolRefused(f"run id {context.run_id!r} cannot name a scratch folder")
    return context.run_id, context.scratch


@tool
async def write_run_file(path: str, content: str, encoding: Encoding = "text") -> dict[str, Any]:
    """Write a file in this run's scratch space (created or replaced whole). content is
    text, or base64 with encoding="base64". Returns {path, bytes, location}."""
    name = normalise(path)
    data = _decode(content, encoding)
    caps = Caps.from_env()
    if len(data) > caps.file_bytes:
        raise ToolRefused(
            f"write_run_file {name!r}: {len(data):,} bytes; a file may have {caps.file_bytes:,}"
        )
    run_id, scratch = _scratch()
    sizes = await scratch.sizes(run_id)
    total = sum(sizes.values()) - sizes.get(name, 0) + len(data)
    if total > caps.total_bytes:
        raise ToolRefused(
            f"write_run_file {name!r}: the run's files would total {total:,} bytes; the "
            f"limit is {caps.total_bytes:,}"
        )
    await scratch.write(run_id, name, data)
    return {"path": name, "bytes": len(data), "location": scratch.location(run_id) + name}


@tool
async def read_run_file(path: str, encoding: Encoding = "text") -> dict[str, Any]:
    """Read a file of this run's scratch space: {path, bytes, text} (UTF-8), or
    {path, bytes, base64} with encoding="base64"."""
    name = normalise(path)
    if encoding not in ("text", "base64"):
        raise ToolRefused(f"encoding must be 'text' or 'base64', got {encoding!r}")
    caps = Caps.from_env()
    run_id, scratch = _scratch()
    try:
        data = await scratch.read(run_id, name, caps.file_bytes)
    except FileNotFoundError:
        raise FileNotFoundError(f"read_run_file: this run has no file {name!r}") from None
    if len(data) > caps.file_bytes:
        raise ToolRefused(f"read_run_file {name!r}: over {caps.file_bytes:,} bytes")
    if encoding == "base64":
        return {"path": name, "bytes": len(data), "base64": base64.b64encode(data).decode()}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToolRefused(
            f"read_run_file {name!r} is not UTF-8 text (byte {exc.start}); read it with "
            "encoding='base64'"
        ) from exc
    return {"path": name, "bytes": len(data), "text": text}


def _decode(content: Any, encoding: str) -> bytes:
    if not isinstance(content, str):
        raise ToolRefused(f"content must be a string, got {type(content).__name__}")
    if encoding == "text":
        return content.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ToolRefused(f"content is not valid base64 ({exc})") from exc
    raise ToolRefused(f"encoding must be 'text' or 'base64', got {encoding!r}")


class LocalScratch:
    """A folder per run under a root. Writes go to a temporary file renamed into place."""

    def __init__(self, root: str | Path | None = None) -> None:
        self._root = Path(root) if root is not None else None

    @classmethod
    def next_to(cls, db_path: str) -> LocalScratch:
        """`AGENTGRAPH_RUN_FILES` if set, else `<db>.files/` beside the SQLite file (a
        temporary folder, made on first use, for an in-memory database)."""
        configured = os.environ.get(ENV_RUN_FILES)
        if configured:
            return cls(configured)
        if db_path == ":memory:" or not db_path:
            return cls(None)
        path = Path(db_path)
        return cls(path.with_name(path.name + ".files"))

    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="agentgraph-run-files-"))
        return self._root

    def location(self, run_id: str) -> str:
        return f"{self.root() / run_id}{os.sep}"

    def _file(self, run_id: str, path: str) -> Path:
        folder = (self.root() / run_id).resolve()
        target = (folder / path).resolve()
        if not target.is_relative_to(folder):  # a symlink planted in the folder
            raise ToolRefused(f"path {path!r} leads out of the run's folder")
        return target

    async def read(self, run_id: str, path: str, limit: int) -> bytes:
        def work() -> bytes:
            target = self._file(run_id, path)
            if not target.is_file():
                raise FileNotFoundError(path)
            with target.open("rb") as handle:
                return handle.read(limit + 1)

        return await asyncio.to_thread(work)

    async def write(self, run_id: str, path: str, data: bytes) -> None:
        def work() -> None:
            target = self._file(run_id, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise ToolRefused(f"path {path!r} is a folder")
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".writing-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

        await asyncio.to_thread(work)

    async def sizes(self, run_id: str) -> dict[str, int]:
        def work() -> dict[str, int]:
            folder = self.root() / run_id
            if not folder.is_dir():
                return {}
            return {
                p.relative_to(folder).as_posix(): p.stat().st_size
                for p in folder.rglob("*")
                if p.is_file() and not p.name.startswith(".writing-")
            }

        return await asyncio.to_thread(work)
