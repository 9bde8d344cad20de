"""An agent's `attach` entries, rendered, become the files sent to the model as parts.

An entry renders to one of:
- a local path (the local backend only): read here, MIME type from the extension; the
  file must lie under the attachment root (`AGENTGRAPH_ATTACH_ROOT`, default the
  working directory), symlinks resolved first, so a graph (or a run input) cannot send
  an arbitrary file of the machine to the model;
- a `gs://bucket/object` URI: passed to the model's service as a file reference, MIME
  type from the extension. Vertex AI reads it with the deployment's identity, not the
  caller's, so where callers are not the operator (the GCP backend) the bucket must be
  listed in `AGENTGRAPH_ATTACH_BUCKETS` (empty: no gs:// attachment): otherwise any api
  caller could have the model read any object the deployment can, another run's files
  included;
- `{"mime_type": "image/png", "data": "<base64>"}`: inline bytes;
- `{"uri": "gs://...", "mime_type": "..."}`: a file reference with an explicit type.

Inline bytes (files and base64 together) are capped at `MAX_INLINE_BYTES` per node
attempt: Gemini refuses requests over 20 MB, and base64 in the request's JSON grows the
bytes by 4/3. Every error is an `AttachmentInvalid` naming the entry (`attach[1]`) and
is permanent: the same entry would fail again.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agentgraph.core.errors import AttachmentInvalid
from agentgraph.core.llm_port import Attachment
from agentgraph.core.names import ENV_ATTACH_BUCKETS, ENV_ATTACH_ROOT

MAX_INLINE_BYTES = 14 * 1024 * 1024
# Types Python's table lacks or gets wrong on some systems, for the files Gemini reads.
_EXTRA_TYPES = {
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".md": "text/markdown",
    ".py": "text/x-python",
    ".flac": "audio/flac",
    ".aac": "audio/aac",
    ".ogg": "audio/ogg",
    ".webm": "video/webm",
    ".json": "application/json",
}


def mime_type_of(name: str, where: str) -> str:
    suffix = Path(name).suffix.lower()
    mime = _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(name, strict=False)[0]
    if mime is None:
        raise AttachmentInvalid(
            f"{where}: cannot tell the MIME type of {name!r} from its extension; give "
            '{"uri": ..., "mime_type": ...} or {"mime_type": ..., "data": <base64>} instead'
        )
    return mime


def resolve(
    rendered: Iterable[Any], *, local_files: bool, root: Path | None = None
) -> tuple[Attachment, ...]:
    """The attachments of rendered `attach` entries, in order. `local_files` says whether
    paths may be read and any bucket named (the local backend, whose user is the
    operator); `root` overrides the attachment root."""
    attachments: list[Attachment] = []
    inline = 0
    for i, value in enumerate(rendered):
        where = f"attach[{i}]"
        attachment = _one(value, where, local_files, root)
        if attachment.data is not None:
            inline += len(attachment.data)
            if inline > MAX_INLINE_BYTES:
                raise AttachmentInvalid(
                    f"{where}: the inline attachments reach {inline:,} bytes; the limit is "
                    f"{MAX_INLINE_BYTES:,} (send large files as gs:// URIs)"
                )
        attachments.append(attachment)
    return tuple(attachments)


def _one(value: Any, where: str, local_files: bool, root: Path | None) -> Attachment:
    if isinstance(value, Mapping):
        return _from_mapping(value, where, local_files)
    if not isinstance(value, str):
        raise AttachmentInvalid(
            f"{where}: rendered to {type(value).__name__}; expected a path, a gs:// URI or "
            "{mime_type, data}"
        )
    text = value.strip()
    if not text:
        raise AttachmentInvalid(f"{where}: rendered to an empty string")
    if text.startswith("gs://"):
        _check_bucket(text, where, local_files)
        return Attachment(mime_type_of(_gs_object(text, where), where), uri=text)
    if "://" in text:
        raise AttachmentInvalid(
            f"{where}: {text[:100]!r} is not a gs:// URI; other URLs are not fetched "
            "(use the http_get tool, then inline data)"
        )
    if not local_files:
        raise AttachmentInvalid(
            f"{where}: {text[:100]!r} is a local path, which only the local backend reads; "
            "use a gs:// URI or {mime_type, data} here"
        )
    return _from_file(text, where, root)


def _from_mapping(value: Mapping[str, Any], where: str, local_files: bool) -> Attachment:
    unknown = sorted(set(value) - {"mime_type", "data", "uri"})
    if unknown:
        raise AttachmentInvalid(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    mime = value.get("mime_type")
    if mime is not None and (not isinstance(mime, str) or "/" not in mime):
        raise AttachmentInvalid(f"{where}.mime_type: expected a MIME type like image/png")
    if ("data" in value) == ("uri" in value):
        raise AttachmentInvalid(f"{where}: needs exactly one of 'data' (base64) and 'uri'")
    if "uri" in value:
        uri = value["uri"]
        if not isinstance(uri, str) or not uri.startswith("gs://"):
            raise AttachmentInvalid(f"{where}.uri: expected a gs:// URI")
        _check_bucket(uri, f"{where}.uri", local_files)
        return Attachment(mime or mime_type_of(_gs_object(uri, where), where), uri=uri)
    if mime is None:
        raise AttachmentInvalid(f"{where}.mime_type: required with 'data'")
    data = value["data"]
    if not isinstance(data, str):
        raise AttachmentInvalid(f"{where}.data: expected base64 text")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttachmentInvalid(f"{where}.data: not valid base64 ({exc})") from exc
    return Attachment(mime, data=decoded)


def _gs_object(uri: str, where: str) -> str:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    if not bucket or not name:
        raise AttachmentInvalid(f"{where}: {uri!r} names no object (gs://BUCKET/OBJECT)")
    return name


def _check_bucket(uri: str, where: str, local_files: bool) -> None:
    if local_files:
        return
    bucket = uri.removeprefix("gs://").split("/", 1)[0]
    allowed = {b.strip() for b in os.environ.get(ENV_ATTACH_BUCKETS, "").split(",") if b.strip()}
    if bucket not in allowed:
        raise AttachmentInvalid(
            f"{where}: bucket {bucket!r} is not one this deployment lets agents attach from "
            f"({ENV_ATTACH_BUCKETS}={','.join(sorted(allowed))!r}); the model would read it "
            "with the deployment's identity"
        )


def attach_root(root: Path | None = None) -> Path:
    return (root or Path(os.environ.get(ENV_ATTACH_ROOT) or os.getcwd())).resolve()


def _from_file(text: str, where: str, root: Path | None) -> Attachment:
    base = attach_root(root)
    path = (base / text).resolve()  # an absolute text replaces base
    if not path.is_relative_to(base):
        raise AttachmentInvalid(
            f"{where}: {text[:100]!r} is outside the attachment root {str(base)!r} "
            f"(set {ENV_ATTACH_ROOT} to allow another folder)"
        )
    mime = mime_type_of(path.name, where)
    try:
        size = path.stat().st_size
        if size > MAX_INLINE_BYTES:
            raise AttachmentInvalid(
                f"{where}: {text[:100]!r} is {size:,} bytes; the limit is {MAX_INLINE_BYTES:,}"
            )
        with path.open("rb") as handle:
            data = handle.read(MAX_INLINE_BYTES + 1)
    except FileNotFoundError as exc:
        raise AttachmentInvalid(f"{where}: no such file {text[:100]!r}") from exc
    except IsADirectoryError as exc:
        raise AttachmentInvalid(f"{where}: {text[:100]!r} is a folder, not a file") from exc
    except OSError as exc:
        raise AttachmentInvalid(f"{where}: cannot read {text[:100]!r}: {exc.strerror}") from exc
    if len(data) > MAX_INLINE_BYTES:
        raise AttachmentInvalid(f"{where}: {text[:100]!r} is over {MAX_INLINE_BYTES:,} bytes")
    return Attachment(mime, data=data)
