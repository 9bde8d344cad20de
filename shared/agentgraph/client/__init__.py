"""The Python client of agentgraph's REST api: start, follow, cancel and read runs of a
deployed system with the api's own typed models.

    async with Client(url, audience=url) as client:
        run = await client.create(graph, {"code": source})
        final = await client.wait(run.run_id, timeout_s=600)

- `http`: `Client` (retries, idempotency, ID tokens); its errors are `ApiError`
  (`agentgraph.core.errors`, re-exported here);
- `retrying`: which failures are retried and how long to wait (Retry-After);
- `watch`: the Firestore listener that tells `stream` a run changed;
- `records`: the api's answers as the records the terminal view draws.

The client imports no backend and no server code (held by `.importlinter`): a caller
needs httpx, pydantic and tenacity, plus google-auth to fetch ID tokens and
google-cloud-firestore to listen.
"""

from agentgraph.client.http import TERMINAL, Client
from agentgraph.core.errors import ApiError

__all__ = ["TERMINAL", "ApiError", "Client"]
