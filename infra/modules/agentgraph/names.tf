# The cloud names the code reads from shared/agentgraph/core/names.py, spelled once for Terraform.
# tests/infra/test_terraform.py imports agentgraph.core.names and fails if any of these drifts from
# it, or if a topic, subscription, queue, entry point or environment variable is declared here
# without a constant there (or the other way round).

locals {
  # Pub/Sub topics (names.TOPIC_*).
  topic_node_ready    = "agentgraph-node-ready"
  topic_node_finished = "agentgraph-node-finished"
  topic_run_requests  = "agentgraph-run-requests"
  topic_dead_letter   = "agentgraph-dead-letter"

  # Subscriptions (names.SUBSCRIPTION_*; the exec ones are names.exec_subscription(pool)).
  subscription_complete     = "agentgraph-complete"
  subscription_run_requests = "agentgraph-run-requests"
  subscription_dead_letter  = "agentgraph-dead-letter"

  # Cloud Tasks queue for delayed retries (names.RETRY_QUEUE).
  retry_queue = "agentgraph-retries"

  # Entry points in functions/main.py (names.ENTRY_*).
  entry_api              = "api"
  entry_exec             = "exec_node"
  entry_complete         = "complete"
  entry_retry            = "retry"
  entry_start_from_event = "start_from_event"
  entry_sweep            = "sweep"

  # Environment variable names (names.ENV_*) set on the deployed functions.
  env_backend            = "AGENTGRAPH_BACKEND"
  env_project            = "GOOGLE_CLOUD_PROJECT"
  env_region             = "AGENTGRAPH_REGION"
  env_firestore_database = "AGENTGRAPH_FIRESTORE_DATABASE"
  env_retry_url          = "AGENTGRAPH_RETRY_URL"
  env_tasks_service_acct = "AGENTGRAPH_TASKS_SERVICE_ACCOUNT"
  env_gemini_api_key     = "GEMINI_API_KEY"
  env_tools              = "AGENTGRAPH_TOOLS"
  env_max_concurrency    = "AGENTGRAPH_MAX_CONCURRENCY"
  env_pool               = "AGENTGRAPH_POOL"
  env_admins             = "AGENTGRAPH_ADMINS"
  env_api_audience       = "AGENTGRAPH_API_AUDIENCE"
  env_limit_runs_per_min = "AGENTGRAPH_LIMIT_RUNS_PER_MINUTE"
  env_limit_running_runs = "AGENTGRAPH_LIMIT_RUNNING_RUNS"
  env_limit_daily_usd    = "AGENTGRAPH_LIMIT_DAILY_USD"
  env_limit_daily_tokens = "AGENTGRAPH_LIMIT_DAILY_TOKENS"
  env_run_files_bucket   = "AGENTGRAPH_RUN_FILES_BUCKET"
  env_http_allowed_hosts = "AGENTGRAPH_HTTP_ALLOWED_HOSTS"
  env_attach_buckets     = "AGENTGRAPH_ATTACH_BUCKETS"
  env_trace              = "AGENTGRAPH_TRACE"
  env_model_concurrency  = "AGENTGRAPH_MODEL_CONCURRENCY"
  env_model_rate         = "AGENTGRAPH_MODEL_RATE"
  env_breaker_failures   = "AGENTGRAPH_BREAKER_FAILURES"
  env_breaker_window_s   = "AGENTGRAPH_BREAKER_WINDOW_S"
  env_breaker_cooldown_s = "AGENTGRAPH_BREAKER_COOLDOWN_S"
  env_pool_timeouts      = "AGENTGRAPH_POOL_TIMEOUTS"
}
