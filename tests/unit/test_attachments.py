"""An agent's `attach`: what a graph may write, and what each rendered entry becomes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from agentgraph.core.errors import AttachmentInvalid, GraphInvalid
from agentgraph.core.llm_port import Attachment
from agentgraph.core.validate import load_graph
from agentgraph.llm.attachments import MAX_INLINE_BYTES, resolve

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24


def agent(**extra: object) -> dict[str, object]:
    return {"id": "look", "model": "echo", "prompt": "What is this?", **extra}


def problems(document: dict[str, object]) -> list[str]:
    with pytest.raises(GraphInvalid) as caught:
        load_graph(document)
    return [str(p) for p in caught.value.problems]


# ---- the graph ---------------------------------------------------------------------------


def test_attach_is_kept_on_the_compiled_agent_and_its_templates_read_ancestors() -> None:
    graph = load_graph(
        {
            "name": "g",
            "nodes": [
                {"id": "draw", "model": "echo", "prompt": "x"},
                agent(after=["draw"], attach=["{{ input.image }}", "{{ nodes.draw.output }}"]),
            ],
        }
    )
    assert graph["look"].attach == ("{{ input.image }}", "{{ nodes.draw.output }}")
    assert graph["look"].reads == {"draw"}


def test_attach_on_a_tool_node_is_refused() -> None:
    found = problems({"name": "g", "nodes": [{"id": "t", "tool": "x", "attach": ["a.png"]}]})
    assert any("'attach' is for agent nodes" in p for p in found)


def test_an_attach_template_reading_a_non_ancestor_names_the_entry() -> None:
    found = problems(
        {
            "name": "g",
            "nodes": [
                {"id": "other", "model": "echo", "prompt": "x"},
                agent(attach=["ok.png", "{{ nodes.other.output }}"]),
            ],
        }
    )
    assert any(p.startswith("nodes[1].attach[1]: refers to node 'other'") for p in found)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"data": "AAAA"}, "attach[0].mime_type is required with 'data'"),
        ({"mime_type": "image/png"}, "attach[0] needs exactly one of 'data' (base64) and 'uri'"),
        ({"mime_type": "image/png", "data": "A", "path": "x"}, "attach[0] has unknown key(s)"),
    ],
)
def test_a_malformed_literal_entry_is_refused_naming_it(
    entry: dict[str, str], message: str
) -> None:
    found = problems({"name": "g", "nodes": [agent(attach=[entry])]})
    assert any(message in p for p in found), found


def test_at_most_16_attachments() -> None:
    found = problems({"name": "g", "nodes": [agent(attach=["a.png"] * 17)]})
    assert any(p.startswith("nodes[0].attach") for p in found)


# ---- rendered entries ------------------------------------------------------------------


def test_a_local_file_under_the_root_is_read_with_its_type_from_the_extension(
    tmp_path: Path,
) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.png").write_bytes(PNG)
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4")
    found = resolve(["img/cat.png", str(tmp_path / "notes.pdf")], local_files=True, root=tmp_path)
    assert found == (
        Attachment("image/png", data=PNG),
        Attachment("application/pdf", data=b"%PDF-1.4"),
    )


def test_the_attachment_root_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cat.webp").write_bytes(b"RIFF")
    monkeypatch.setenv("AGENTGRAPH_ATTACH_ROOT", str(tmp_path))
    assert resolve(["cat.webp"], local_files=True) == (Attachment("image/webp", data=b"RIFF"),)


@pytest.mark.parametrize("path", ["../secret.png", "/etc/passwd.txt", "img/../../secret.png"])
def test_a_path_outside_the_root_is_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(PNG)
    with pytest.raises(AttachmentInvalid, match=r"attach\[0\]: .* is outside the attachment root"):
        resolve([path], local_files=True, root=root)


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(PNG)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(AttachmentInvalid, match="outside the attachment root"):
        resolve(["link.png"], local_files=True, root=root)


def test_local_paths_are_refused_where_the_backend_reads_no_local_files(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(PNG)
    with pytest.raises(AttachmentInvalid, match=r"attach\[0\]: .* only the local backend"):
        resolve(["cat.png"], local_files=False, root=tmp_path)


def test_missing_file_unknown_extension_and_folder_name_the_entry(tmp_path: Path) -> None:
    (tmp_path / "blob.zzz").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(AttachmentInvalid, match=r"attach\[0\]: no such file 'gone.png'"):
        resolve(["gone.png"], local_files=True, root=tmp_path)
    with pytest.raises(AttachmentInvalid, match=r"attach\[1\]: cannot tell the MIME type"):
        resolve([{"uri": "gs://b/x.png"}, "blob.zzz"], local_files=True, root=tmp_path)
    with pytest.raises(AttachmentInvalid, match="is a folder"):
        resolve(["dir.png"], local_files=True, root=tmp_path)


def test_a_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.truncate(MAX_INLINE_BYTES + 1)
    with pytest.raises(AttachmentInvalid, match="the limit is"):
        resolve(["big.png"], local_files=True, root=tmp_path)


def test_inline_attachments_together_are_capped() -> None:
    half = base64.b64encode(b"x" * (MAX_INLINE_BYTES // 2 + 1)).decode()
    entry = {"mime_type": "image/png", "data": half}
    with pytest.raises(AttachmentInvalid, match=r"attach\[1\]: the inline attachments reach"):
        resolve([entry, entry], local_files=False)


def test_gs_uris_are_file_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTGRAPH_ATTACH_BUCKETS", "other, bucket")
    found = resolve(
        ["gs://bucket/photos/cat.jpg", {"uri": "gs://bucket/raw", "mime_type": "video/mp4"}],
        local_files=False,
    )
    assert found == (
        Attachment("image/jpeg", uri="gs://bucket/photos/cat.jpg"),
        Attachment("video/mp4", uri="gs://bucket/raw"),
    )


def test_on_a_shared_deployment_only_allowlisted_buckets_may_be_attached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model's service reads gs:// objects as the deployment, so an api caller must
    not name a bucket the operator did not list (another run's scratch files, say)."""
    monkeypatch.delenv("AGENTGRAPH_ATTACH_BUCKETS", raising=False)
    with pytest.raises(AttachmentInvalid, match=r"attach\[0\]: bucket 'b' is not one"):
        resolve(["gs://b/x.png"], local_files=False)
    monkeypatch.setenv("AGENTGRAPH_ATTACH_BUCKETS", "media")
    with pytest.raises(AttachmentInvalid, match=r"attach\[0\].uri: bucket 'proj-agentgraph-run"):
        resolve([{"uri": "gs://proj-agentgraph-run-files/runs/x/a.png"}], local_files=False)
    assert resolve(["gs://media/x.png"], local_files=False)[0].uri == "gs://media/x.png"
    assert resolve(["gs://any/x.png"], local_files=True)[0].uri == "gs://any/x.png"


def test_inline_base64_with_a_mime_type() -> None:
    entry = {"mime_type": "image/png", "data": base64.b64encode(PNG).decode()}
    assert resolve([entry], local_files=False) == (Attachment("image/png", data=PNG),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"mime_type": "image/png", "data": "not base64!"}, r"attach\[0\].data: not valid base64"),
        ({"mime_type": "png", "data": "AAAA"}, r"attach\[0\].mime_type: expected a MIME type"),
        ({"data": "AAAA"}, r"attach\[0\].mime_type: required"),
        ({"uri": "https://x/y.png"}, r"attach\[0\].uri: expected a gs:// URI"),
        ("gs://bucket", r"attach\[0\]: 'gs://bucket' names no object"),
        ("https://example.com/cat.png", r"attach\[0\]: .* is not a gs:// URI"),
        (3, r"attach\[0\]: rendered to int"),
        ("  ", r"attach\[0\]: rendered to an empty string"),
    ],
)
def test_a_bad_rendered_entry_names_its_field(value: object, message: str) -> None:
    with pytest.raises(AttachmentInvalid, match=message):
        resolve([value], local_files=True)
