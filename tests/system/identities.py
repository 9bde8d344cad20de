"""Signed-in users on the emulator stack, without the internet.

The stack's functions run with `AGENTGRAPH_AUTH=emulator`: they read the subject of an
unsigned token whose issuer and audience name the stack's project, as the web console
sends it (web/src/session.ts) and the Firestore emulator accepts as `mockUserToken`.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any


def emulator_token(uid: str, project: str) -> str:
    """The unsigned ID token of `uid` in `project`, valid for an hour."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "sub": uid,
        "user_id": uid,
        "iat": now,
        "exp": now + 3600,
    }
    return f"{part({'alg': 'none', 'type': 'JWT'})}.{part(claims)}."
