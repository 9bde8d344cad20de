"""JSON values too large for one Firestore document, split into chunk documents.

Firestore caps a document at 1 MiB. Node outputs and run inputs may be up to 10 MiB
(`engine.MAX_OUTPUT_BYTES`, `validate.MAX_INPUT_BYTES`), and a 2,000-node graph snapshot
can pass 1 MiB too. Such a value is stored as its JSON text cut into strings of at most
`CHUNK_BYTES` UTF-8 bytes (cut on character boundaries, so every chunk is a valid string a
browser can read and join), in documents `<parent>/chunks/<field>-<sha16>-<i>`, and the
parent document keeps only a marker `{chunks, bytes, sha256, prefix}`.

What is guaranteed:
- Chunk ids are derived from the content's hash, so writing the same value again writes
  the same documents (idempotent), and two writers racing with different values (a lease
  takeover) never overwrite each other's chunks: the marker that wins the conditional
  commit names the chunks that match it.
- Chunks are written before the document that names them, so a reader that sees a marker
  finds its chunks; `join` verifies length and SHA-256 and raises `ChunkCorrupt` otherwise.
- A losing writer leaves orphan chunks behind (never referenced, never read); they cost
  storage only and can be removed by a TTL policy on the `chunks` collection group.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentgraph.core.errors import ChunkCorrupt

CHUNK_BYTES = 900_000
"""Largest chunk string in UTF-8 bytes (Firestore strings and documents stop at 1 MiB)."""

CHUNKS_PER_COMMIT = 4
"""Chunk documents written per commit: at most 3.6 MB. Production takes 10 MiB requests,
but the Firestore emulator refuses gRPC messages over 4 MiB (ResourceExhausted)."""


def dumps(value: Any) -> str | None:
    """The stored JSON text of a value (None stays None: an absent value, as in SQLite)."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def size(text: str | None) -> int:
    return 0 if text is None else len(text.encode())


@dataclass(frozen=True)
class Chunked:
    """A value stored in chunks: what the parent document records, and the pieces."""

    field: str
    pieces: tuple[str, ...]
    bytes: int
    sha256: str

    @property
    def prefix(self) -> str:
        return f"{self.field}-{self.sha256[:16]}"

    def ids(self) -> list[str]:
        return chunk_ids(self.prefix, len(self.pieces))

    def marker(self) -> dict[str, Any]:
        return {
            "chunks": len(self.pieces),
            "bytes": self.bytes,
            "sha256": self.sha256,
            "prefix": self.prefix,
        }


def chunk_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


def split(field: str, text: str, limit: int = CHUNK_BYTES) -> Chunked:
    """Cut `text` into strings of at most `limit` UTF-8 bytes, on character boundaries."""
    data = text.encode()
    pieces: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # inside a multi-byte char
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return Chunked(field, tuple(pieces), len(data), hashlib.sha256(data).hexdigest())


def join(marker: Mapping[str, Any], pieces: list[str], where: str) -> str:
    """The JSON text back from its chunks, checked against the marker."""
    text = "".join(pieces)
    data = text.encode()
    if (
        len(pieces) != marker["chunks"]
        or len(data) != marker["bytes"]
        or hashlib.sha256(data).hexdigest() != marker["sha256"]
    ):
        raise ChunkCorrupt(
            f"{where}: expected {marker['chunks']} chunks of {marker['bytes']:,} bytes with "
            f"sha256 {marker['sha256'][:16]}…, found {len(pieces)} chunks of {len(data):,} "
            "bytes that do not match"
        )
    return text


def plan(
    texts: Mapping[str, str | None], budget: int
) -> tuple[dict[str, str | None], list[Chunked]]:
    """Which fields stay inline and which go to chunks: the largest are chunked first
    until what stays inline fits `budget` bytes (one document holds several fields)."""
    inline: dict[str, str | None] = dict(texts)
    chunked: list[Chunked] = []
    for field in sorted(texts, key=lambda f: size(texts[f]), reverse=True):
        if sum(size(t) for t in inline.values()) <= budget:
            break
        text = inline.pop(field)
        assert text is not None
        chunked.append(split(field, text))
    return inline, chunked
