"""Who is calling, as the api sees it.

The api verifies no tokens itself: whoever serves it passes an `authenticate` callable
(the gcp backend's ID-token check, or a stand-in in tests) that returns a `Caller` or
raises AuthError. The type lives here so the api depends on no backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Caller:
    """A verified caller. `uid` owns the runs and graphs it creates; an admin sees all."""

    uid: str
    is_admin: bool = False
    email: str | None = None

    def may_see(self, owner: str | None) -> bool:
        """Whether a run or graph of `owner` is visible to this caller."""
        return self.is_admin or (owner is not None and owner == self.uid)


# Takes the request (anything with case-insensitive `.headers`); blocking is fine, the api
# calls it on a worker thread.
Authenticate = Callable[[Any], Caller]
