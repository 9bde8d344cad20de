"""The one place where cloud resource names and environment variables are spelled.

The functions, the GCP adapters, the emulator harness and the Terraform tests all read
these constants, so a topic renamed here is renamed everywhere or a test fails.
"""

from __future__ import annotations

# Pub/Sub topics.
TOPIC_NODE_READY = "agentgraph-node-ready"
TOPIC_NODE_FINISHED = "agentgraph-node-finished"
TOPIC_RUN_REQUESTS = "agentgraph-run-requests"
TOPIC_DEAD_LETTER = "agentgraph-dead-letter"

# Attribute on node-ready messages that routes them to exec-<pool>.
POOL_ATTRIBUTE = "pool"
DEFAULT_POOL = "default"


def exec_subscription(pool: str) -> str:
    """Push subscription that feeds exec-<pool> (filtered on the pool attribute)."""
    return f"agentgraph-exec-{pool}"


def exec_function(pool: str) -> str:
    """Cloud Function name of the executor for one pool."""
    return f"exec-{pool}"


def pool_filter(pool: str) -> str:
    """Pub/Sub subscription filter selecting one pool's node-ready messages."""
    return f'attributes.{POOL_ATTRIBUTE} = "{pool}"'


SUBSCRIPTION_COMPLETE = "agentgraph-complete"
SUBSCRIPTION_RUN_REQUESTS = "agentgraph-run-requests"

# Cloud Tasks queue for delayed retries.
RETRY_QUEUE = "agentgraph-retries"

# Firestore collections.
COLLECTION_RUNS = "runs"
COLLECTION_NODES = "nodes"
COLLECTION_EVENTS = "events"
COLLECTION_ARRIVALS = "arrivals"
COLLECTION_TALLIES = "tallies"  # a wide child's arrivals, counted in groups (firestore_store)
COLLECTION_CHUNKS = "chunks"
COLLECTION_STEPS = "steps"  # runs/{run}/nodes/{node}/steps/{index}: an agent's tool loop
COLLECTION_GRAPHS = "graphs"
COLLECTION_VERSIONS = "versions"
COLLECTION_IDEMPOTENCY = "idempotency"
COLLECTION_MODEL_GATES = "model_gates"  # one small document per model (core/model_gate.py)

# Cloud Function entry points in functions/main.py (Terraform's entry_point values).
ENTRY_API = "api"
ENTRY_EXEC = "exec_node"
ENTRY_COMPLETE = "complete"
ENTRY_RETRY = "retry"
ENTRY_START_FROM_EVENT = "start_from_event"
ENTRY_SWEEP = "sweep"
ENTRY_POINTS = (
    ENTRY_API,
    ENTRY_EXEC,
    ENTRY_COMPLETE,
    ENTRY_RETRY,
    ENTRY_START_FROM_EVENT,
    ENTRY_SWEEP,
)

# Environment variables read by the code.
ENV_BACKEND = "AGENTGRAPH_BACKEND"  # local | gcp
ENV_DB = "AGENTGRAPH_DB"  # SQLite file of the local backend
ENV_PROJECT = "GOOGLE_CLOUD_PROJECT"
ENV_REGION = "AGENTGRAPH_REGION"
ENV_FIRESTORE_DATABASE = "AGENTGRAPH_FIRESTORE_DATABASE"
ENV_FIRESTORE_EMULATOR = "FIRESTORE_EMULATOR_HOST"
ENV_PUBSUB_EMULATOR = "PUBSUB_EMULATOR_HOST"
ENV_TASKS_EMULATOR = "CLOUD_TASKS_EMULATOR_HOST"
ENV_RETRY_URL = "AGENTGRAPH_RETRY_URL"  # where Cloud Tasks POSTs retries
ENV_TASKS_SERVICE_ACCOUNT = "AGENTGRAPH_TASKS_SERVICE_ACCOUNT"  # OIDC identity of tasks
ENV_AUTH_MODE = "AGENTGRAPH_AUTH"  # "off"/"emulator" only on emulators; production refuses
ENV_GEMINI_API_KEY = "GEMINI_API_KEY"
ENV_GEMINI_BASE_URL = "GOOGLE_GEMINI_BASE_URL"
ENV_MAX_CONCURRENCY = "AGENTGRAPH_MAX_CONCURRENCY"  # per-model caps: gemini-2.5-pro=4,*=16
# Worker processes for Gemini SDK calls (llm/sdk_pool.py); 0 keeps them in-process.
ENV_GEMINI_PROCESSES = "AGENTGRAPH_GEMINI_PROCESSES"
# Per-model limits across the deployment and the circuit breaker (core/model_gate.py).
ENV_MODEL_CONCURRENCY = "AGENTGRAPH_MODEL_CONCURRENCY"  # gemini-2.5-pro=4,*=16
ENV_MODEL_RATE = "AGENTGRAPH_MODEL_RATE"  # calls started per second: gemini-2.5-pro=2
ENV_BREAKER_FAILURES = "AGENTGRAPH_BREAKER_FAILURES"
ENV_BREAKER_WINDOW_S = "AGENTGRAPH_BREAKER_WINDOW_S"
ENV_BREAKER_COOLDOWN_S = "AGENTGRAPH_BREAKER_COOLDOWN_S"
ENV_TOOLS = "AGENTGRAPH_TOOLS"  # comma-separated modules whose @tool functions to load
ENV_API_URL = "AGENTGRAPH_API_URL"  # the CLI's --api: a deployed api to drive
ENV_API_TOKEN = "AGENTGRAPH_API_TOKEN"  # the CLI's --token: a bearer token for that api

# Pull subscription on the dead-letter topic: keeps dead-lettered messages for inspection
# (a topic without subscriptions drops what is published to it). Created by infra/.
SUBSCRIPTION_DEAD_LETTER = "agentgraph-dead-letter"

# The pool an exec function serves. Set on exec-<pool> where push subscriptions are not
# filtered (the Pub/Sub emulator of gcloud 528 ignores filters): the function then acks and
# ignores node-ready messages of other pools. Unset = serve whatever arrives.
ENV_POOL = "AGENTGRAPH_POOL"

# Google identities (uid or email, comma-separated) the api treats as admins, besides Firebase
# tokens with the custom claim admin: true. Set by infra/ from its api_admins variable.
ENV_ADMINS = "AGENTGRAPH_ADMINS"

# Audiences the api accepts on Google ID tokens (comma-separated); never taken from a request:
# unset, no Google ID token passes (docs/security.md). Terraform sets the api's own URL.
ENV_API_AUDIENCE = "AGENTGRAPH_API_AUDIENCE"

# Per-owner limits (core/limits.py); Terraform sets them from variables of the same meaning.
ENV_LIMIT_RUNS_PER_MINUTE = "AGENTGRAPH_LIMIT_RUNS_PER_MINUTE"
ENV_LIMIT_RUNNING_RUNS = "AGENTGRAPH_LIMIT_RUNNING_RUNS"
ENV_LIMIT_DAILY_USD = "AGENTGRAPH_LIMIT_DAILY_USD"
ENV_LIMIT_DAILY_TOKENS = "AGENTGRAPH_LIMIT_DAILY_TOKENS"
# Where traces and metrics go: off (default) | console | otlp | file | gcp (Terraform: gcp,
# Cloud Trace and Cloud Monitoring). agentgraph.observability reads it.
ENV_TRACE = "AGENTGRAPH_TRACE"

# The built-in http_get tool (tools/web.py): allowed host names, comma-separated
# (`*.example.com` for subdomains); unset or empty refuses every URL. Body cap and deadline.
ENV_HTTP_ALLOWED_HOSTS = "AGENTGRAPH_HTTP_ALLOWED_HOSTS"
ENV_HTTP_MAX_BYTES = "AGENTGRAPH_HTTP_MAX_BYTES"
ENV_HTTP_TIMEOUT_S = "AGENTGRAPH_HTTP_TIMEOUT_S"
# The folder an agent's `attach` may read local files from (the local backend only);
# default: the working directory (llm/attachments.py).
ENV_ATTACH_ROOT = "AGENTGRAPH_ATTACH_ROOT"
# Buckets whose gs:// objects an agent may attach on GCP (comma-separated; empty: none).
# The model's service reads them with the deployment's identity, not the caller's.
ENV_ATTACH_BUCKETS = "AGENTGRAPH_ATTACH_BUCKETS"
# The runs' scratch space (tools/run_files.py): a folder on the local backend (default
# `<db>.files/` beside the SQLite file); on GCP a bucket, files at gs://BUCKET/runs/ID/
# (Terraform creates it and sets the variable on the exec functions). Caps in bytes.
ENV_RUN_FILES = "AGENTGRAPH_RUN_FILES"
ENV_RUN_FILES_BUCKET = "AGENTGRAPH_RUN_FILES_BUCKET"
ENV_RUN_FILE_MAX_BYTES = "AGENTGRAPH_RUN_FILE_MAX_BYTES"
ENV_RUN_FILES_MAX_TOTAL_BYTES = "AGENTGRAPH_RUN_FILES_MAX_TOTAL_BYTES"
# Each pool's exec function timeout, "pool=seconds,..." (core/timeouts.py): validation
# refuses a node timeout_s the function timeout and the ack deadline would not allow.
ENV_POOL_TIMEOUTS = "AGENTGRAPH_POOL_TIMEOUTS"
