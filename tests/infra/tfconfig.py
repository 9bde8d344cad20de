"""The Terraform of infra/, parsed with python-hcl2 into plain values the tests can read.

No provider can be downloaded here, so `terraform validate` cannot run; these tests read the
configuration statically instead. Strings come back without their quotes, blocks as lists of
dicts, and expressions as "${...}" strings (e.g. "${local.topic_node_ready}").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MODULE = INFRA / "modules" / "agentgraph"

_LOCAL_REF = re.compile(r"^\$\{\(?local\.([A-Za-z0-9_]+)\)?\}$")


def _unescape(value: Any) -> Any:
    """python-hcl2 < 8 keeps escaped quotes as \\"; 8 with strip_string_quotes does not."""
    if isinstance(value, str):
        return value.replace('\\"', '"')
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    if isinstance(value, dict):
        return {_unescape(k): _unescape(v) for k, v in value.items()}
    return value


def parse_hcl(text: str) -> dict[str, Any]:
    try:
        from hcl2.utils import SerializationOptions
    except ImportError:  # python-hcl2 < 8: strings already come back unquoted
        return _unescape(hcl2.loads(text))
    options = SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    return hcl2.loads(text, serialization_options=options)


@dataclass
class TfConfig:
    """All .tf files of one Terraform directory (a root or a module), merged."""

    path: Path
    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)
    locals_by_file: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> TfConfig:
        config = cls(path)
        files = sorted(path.glob("*.tf"))
        assert files, f"no .tf files in {path}"
        for file in files:
            parsed = parse_hcl(file.read_text())
            for entry in parsed.get("resource", []):
                for rtype, by_name in entry.items():
                    config.resources.setdefault(rtype, {}).update(by_name)
            for entry in parsed.get("data", []):
                for dtype, by_name in entry.items():
                    config.data.setdefault(dtype, {}).update(by_name)
            for entry in parsed.get("locals", []):
                config.locals.update(entry)
                config.locals_by_file.setdefault(file.name, {}).update(entry)
            for entry in parsed.get("variable", []):
                config.variables.update(entry)
            for entry in parsed.get("output", []):
                config.outputs.update(entry)
            for entry in parsed.get("module", []):
                config.modules.update(entry)
            config.terraform.extend(parsed.get("terraform", []))
        return config

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return self.resources.get(rtype, {})

    def resolve(self, value: Any) -> Any:
        """Follows "${local.x}" (also "${(local.x)}", a map key) to the local's value."""
        seen = set()
        while isinstance(value, str) and (match := _LOCAL_REF.match(value)):
            name = match.group(1)
            assert name not in seen, f"local.{name} refers to itself"
            seen.add(name)
            assert name in self.locals, f"{value} names no local in {self.path}"
            value = self.locals[name]
        return value

    def env_map(self, expression: Any) -> dict[str, Any]:
        """The environment variables of an environment_variables value: an inline map, a local,
        or merge() of locals (maps, or expressions whose keys are written `(local.env_x) =`)."""
        if isinstance(expression, dict):
            return {self.resolve(k): v for k, v in expression.items()}
        assert isinstance(expression, str), f"unexpected environment_variables {expression!r}"
        env: dict[str, Any] = {}
        referenced = re.findall(r"local\.([A-Za-z0-9_]+)", expression)
        assert referenced, f"environment_variables {expression!r} names no local"
        for name in referenced:
            value = self.locals[name]
            if isinstance(value, dict):
                env.update({self.resolve(k): v for k, v in value.items()})
            else:  # an expression, e.g. a for over pools: its keys are "(local.env_x) = ..."
                # `(local.x) = v` (python-hcl2 >= 8) or `"${(local.x)}": v` (older versions)
                keys = re.findall(r"\(local\.([A-Za-z0-9_]+)\)(?:\}\")?\s*[=:]", str(value))
                assert keys, f"local.{name} sets no environment variable"
                env.update({self.resolve(f"${{local.{key}}}"): value for key in keys})
        return env


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block `name` of a resource body."""
    found = body.get(name)
    assert isinstance(found, list) and len(found) == 1, f"expected one {name} block, got {found!r}"
    return found[0]


def blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    found = body.get(name, [])
    return found if isinstance(found, list) else [found]


def with_each(value: Any, each: dict[str, Any]) -> Any:
    """A for_each resource's body as one instance sees it: "${each.value.x}" becomes the value of
    x in `each`, and each.value.x inside a longer expression its HCL spelling."""
    if isinstance(value, dict):
        return {k: with_each(v, each) for k, v in value.items()}
    if isinstance(value, list):
        return [with_each(v, each) for v in value]
    if not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\$\{each\.value\.([A-Za-z0-9_]+)\}", value)
    if whole:
        return each[whole.group(1)]

    def spelled(match: re.Match[str]) -> str:
        found = each[match.group(1)]
        if isinstance(found, str) and found.startswith("${") and found.endswith("}"):
            return found[2:-1]
        return f'"{found}"' if isinstance(found, str) else str(found)

    return re.sub(r"each\.value\.([A-Za-z0-9_]+)", spelled, value)


def hcl_object(text: str) -> dict[str, Any]:
    """The attributes of an inline HCL object `{a = "x", b = expr, c = 60}` (as python-hcl2 keeps
    the body of a for expression), as python-hcl2 would give them: strings unquoted,
    expressions as "${...}", whole numbers as int."""
    body = text.strip()
    assert body.startswith("{") and body.endswith("}"), f"not an object: {text!r}"
    items, depth, quoted, start = [], 0, False, 1
    for i, char in enumerate(body[1:-1], start=1):
        if char == '"' and body[i - 1] != "\\":
            quoted = not quoted
        elif not quoted and char in "([{":
            depth += 1
        elif not quoted and char in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:-1])
    result: dict[str, Any] = {}
    for item in filter(str.strip, items):
        key, _, value = item.partition("=")
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            result[key.strip()] = value[1:-1].replace('\\"', '"')
        elif value.isdigit():
            result[key.strip()] = int(value)
        else:
            result[key.strip()] = f"${{{value}}}"
    return result


def walk_strings(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string (keys too) in a parsed value, with the path of keys that leads to it."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k), k
            yield from walk_strings(v, (*path, k))
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item, path)
