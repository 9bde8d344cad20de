"""The stub's fault grammar: what a test asks the fake Gemini to do wrong.

Faults ride on the model name, which google-genai copies into the URL path unchanged:
`gemini-2.5-flash~fail=2x429~latency=100ms`. The same grammar is accepted in an
`x-stub-faults` request header (added to the suffix's faults). Items are separated by
`~` or `,`; durations are `<number>ms` or `<number>s`:

    fail=NxCODE     the first N calls of this conversation answer HTTP CODE, then the
                    next item (repeatable: fail=1x429~fail=1x503), then success
    status=CODE     every call answers HTTP CODE (400, 401, 403, 404, 429, 500, 503...)
    retrydelay=DUR  google.rpc.RetryInfo retryDelay on error answers (429 has 1s by
                    default; other codes carry none unless this is given)
    latency=DUR     wait before answering (added to the server-wide latency)
    chunkdelay=DUR  wait between streamed chunks
    badjson=N       the first N answered calls in JSON mode return truncated JSON
    block           promptFeedback.blockReason SAFETY, no candidates
    finish=REASON   finishReason REASON; SAFETY-like reasons come without any text
    thoughts=N      report N thinking tokens;  cached=N  report N cached prompt tokens

"This conversation" is counted by the server (`gemini_stub.py`): the raw model name
(suffix included), the header's faults and the first user turn's text, so a JSON repair
turn appended to a conversation counts as its second call. An unknown fault is a
`BadRequest`, which the server answers with 400 and a message listing the grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

GRAMMAR = (
    "fail=NxCODE, status=CODE, retrydelay=DUR, latency=DUR, chunkdelay=DUR, badjson=N, "
    "block, finish=REASON, thoughts=N, cached=N (DUR is like 100ms or 2s; items joined "
    "by '~' or ',')"
)


class BadRequest(Exception):
    """The request cannot be answered as asked; becomes a 400 INVALID_ARGUMENT."""


@dataclass(frozen=True)
class Faults:
    fail: tuple[tuple[int, int], ...] = ()
    status: int | None = None
    retry_delay_s: float | None = None
    latency_s: float = 0.0
    chunk_delay_s: float = 0.0
    badjson: int = 0
    block: bool = False
    finish: str | None = None
    thoughts: int = 0
    cached: int = 0

    def error_for(self, call_index: int) -> int | None:
        """The HTTP status the call with this 0-based index must fail with, if any."""
        if self.status is not None:
            return self.status
        start = 0
        for count, code in self.fail:
            if call_index < start + count:
                return code
            start += count
        return None


def _duration(value: str, item: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", value.strip())
    if not match:
        raise BadRequest(f"stub fault {item!r}: expected a duration like 100ms or 2s")
    number = float(match.group(1))
    return number / 1000.0 if match.group(2) == "ms" else number


def _count(value: str, item: str) -> int:
    if not value.isdigit():
        raise BadRequest(f"stub fault {item!r}: expected a whole number, found {value!r}")
    return int(value)


def _http_code(value: str, item: str) -> int:
    code = _count(value, item)
    if not 400 <= code <= 599:
        raise BadRequest(f"stub fault {item!r}: expected an HTTP error code 400..599")
    return code


def parse_faults(spec: str) -> Faults:
    """Parse the fault grammar of the module docstring; raises BadRequest."""
    faults = Faults()
    for raw in re.split(r"[~,]", spec):
        item = raw.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name == "fail":
            match = re.fullmatch(r"(\d+)x(\d{3})", value.strip())
            if not match:
                raise BadRequest(f"stub fault {item!r}: expected fail=NxCODE, e.g. fail=2x429")
            step = (int(match.group(1)), _http_code(match.group(2), item))
            faults = replace(faults, fail=(*faults.fail, step))
        elif name == "status":
            faults = replace(faults, status=_http_code(value, item))
        elif name == "retrydelay":
            faults = replace(faults, retry_delay_s=_duration(value, item))
        elif name == "latency":
            faults = replace(faults, latency_s=faults.latency_s + _duration(value, item))
        elif name == "chunkdelay":
            faults = replace(faults, chunk_delay_s=_duration(value, item))
        elif name == "badjson":
            faults = replace(faults, badjson=_count(value, item))
        elif name == "block" and not value:
            faults = replace(faults, block=True)
        elif name == "finish" and value:
            faults = replace(faults, finish=value.strip().upper())
        elif name == "thoughts":
            faults = replace(faults, thoughts=_count(value, item))
        elif name == "cached":
            faults = replace(faults, cached=_count(value, item))
        else:
            raise BadRequest(f"unknown stub fault {item!r}; expected one of: {GRAMMAR}")
    return faults
