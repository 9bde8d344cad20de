# The functions: the control plane (api, the HTTP public door; complete, retry,
# start-from-event and sweep), and exec-<pool>, one per pool. All run functions/main.py on python311 from the same archive; the
# entry point picks the handler. Only api accepts traffic from outside the project: the others
# are ALLOW_INTERNAL_ONLY, which still admits Pub/Sub push, Cloud Tasks and Cloud Scheduler of
# this project, and they all require the invoker account's OIDC token on top.

locals {
  runtime = "python311"

  control_cpu = var.control_plane.concurrency > 1 ? "1" : null

  # Environment of every function. The Gemini key is not here: it is a secret environment
  # variable of the exec functions only.
  common_env = {
    (local.env_backend)            = "gcp"
    (local.env_project)            = var.project
    (local.env_region)             = var.region
    (local.env_firestore_database) = google_firestore_database.db.name
    (local.env_tools)              = join(",", var.tool_modules)
    # The identity of Cloud Tasks and Cloud Scheduler calls: exec puts it in the retry tasks,
    # retry and sweep admit no other caller.
    (local.env_tasks_service_acct) = google_service_account.invoker.email
    # Per-owner limits: checked by the api when a run starts, by exec before a model call.
    (local.env_limit_runs_per_min) = tostring(var.owner_limits.runs_per_minute)
    (local.env_limit_running_runs) = tostring(var.owner_limits.running_runs)
    (local.env_limit_daily_usd)    = tostring(var.owner_limits.daily_usd)
    (local.env_limit_daily_tokens) = tostring(var.owner_limits.daily_tokens)
    (local.env_trace)              = var.telemetry
    # Each pool's function timeout: the api and start_from_event refuse a node timeout_s that
    # it and the ack deadline (pubsub.tf) would not allow (shared/agentgraph/core/timeouts.py).
    (local.env_pool_timeouts) = join(",", [for pool, p in var.pools : "${pool}=${p.timeout_s}"])
  }

  # The audience of Google ID tokens the api accepts comes from here, never from a request:
  # its own URL (known before it exists: the cloudfunctions.net form), plus var.api_audiences.
  api_own_url = "https://${var.region}-${var.project}.cloudfunctions.net/api"

  api_only_env = {
    (local.env_admins)       = join(",", var.api_admins)
    (local.env_api_audience) = join(",", concat([local.api_own_url], var.api_audiences))
  }

  # exec schedules retries: where Cloud Tasks should POST them. exec calls the models: their
  # limits across every instance and their circuit breaker (state in Firestore, model_gates/).
  exec_only_env = {
    (local.env_retry_url) = google_cloudfunctions2_function.control["retry"].service_config[0].uri
    # The built-in tools, which only exec runs: the runs' scratch bucket (run_files.tf) and
    # the hosts http_get may fetch (none by default: http_get refuses every URL); the
    # buckets agents may attach gs:// files from (none by default).
    (local.env_run_files_bucket)   = google_storage_bucket.run_files.name
    (local.env_http_allowed_hosts) = join(",", var.http_allowed_hosts)
    (local.env_attach_buckets)     = join(",", var.attach_buckets)
    (local.env_model_concurrency)  = var.model_limits.concurrency
    (local.env_model_rate)         = var.model_limits.rate_per_s
    (local.env_breaker_failures)   = tostring(var.model_limits.breaker_failures)
    (local.env_breaker_window_s)   = tostring(var.model_limits.breaker_window_s)
    (local.env_breaker_cooldown_s) = tostring(var.model_limits.breaker_cooldown_s)
  }

  # Per pool: the pool the function serves (the subscription filter already routes by pool;
  # this makes the function ack and skip a stray message of another pool rather than run it),
  # and caps on concurrent model calls in one instance ("" = the code's default).
  exec_pool_env = {
    for pool, p in var.pools : pool => {
      (local.env_pool)            = pool
      (local.env_max_concurrency) = p.max_concurrency
    }
  }

  # Every function but exec-<pool>, by role: sized by var.control_plane unless an entry says
  # otherwise. Only the api accepts traffic from outside the project.
  control_functions = {
    api = {
      name        = "api"
      description = "agentgraph HTTP API: start, inspect and cancel runs"
      entry_point = local.entry_api
      account     = "api"
      ingress     = "ALLOW_ALL"
      env         = merge(local.common_env, local.api_only_env)
    }
    complete = {
      name        = "complete"
      description = "agentgraph fan-in: records arrivals, enqueues children whose parents are all done"
      entry_point = local.entry_complete
      account     = "complete"
    }
    retry = {
      name        = "retry"
      description = "agentgraph delayed retry: called by Cloud Tasks, re-publishes node-ready"
      entry_point = local.entry_retry
      account     = "retry"
    }
    start_from_event = {
      name        = "start-from-event"
      description = "agentgraph: starts runs from messages on the run-requests topic"
      entry_point = local.entry_start_from_event
      account     = "start"
    }
    # One sweep at a time is enough; two would only race for the same expired leases.
    sweep = {
      name          = "sweep"
      description   = "agentgraph sweep: re-dispatches expired leases and due retries (Cloud Scheduler, every minute)"
      entry_point   = local.entry_sweep
      account       = "sweep"
      timeout_s     = 120
      max_instances = 1
      concurrency   = 1
    }
  }
  control_defaults = {
    ingress       = "ALLOW_INTERNAL_ONLY"
    env           = local.common_env
    timeout_s     = 60
    max_instances = var.control_plane.max_instances
    concurrency   = var.control_plane.concurrency
  }
}

resource "google_cloudfunctions2_function" "control" {
  for_each = { for key, f in local.control_functions : key => merge(local.control_defaults, f) }

  project     = var.project
  location    = var.region
  name        = each.value.name
  description = each.value.description
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = each.value.entry_point
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.control_plane.memory
    available_cpu                    = local.control_cpu
    min_instance_count               = 0
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    timeout_seconds                  = each.value.timeout_s
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime[each.value.account].email
    environment_variables            = each.value.env
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.datastore_user,
  ]
}

# exec-<pool> is a resource of its own: it is sized per pool, reads the Gemini key, and its
# environment names the retry function's URL (a resource cannot refer to itself).
resource "google_cloudfunctions2_function" "exec" {
  for_each = var.pools

  project     = var.project
  location    = var.region
  name        = "exec-${each.key}"
  description = "agentgraph executor of pool ${each.key}: claims a node, runs it, records the output"
  labels      = merge(local.labels, { pool = each.key })

  build_config {
    runtime           = local.runtime
    entry_point       = local.entry_exec
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu != null ? each.value.cpu : (each.value.concurrency > 1 ? "1" : null)
    min_instance_count               = 0
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    timeout_seconds                  = each.value.timeout_s
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime["exec"].email
    environment_variables            = merge(local.common_env, local.exec_only_env, local.exec_pool_env[each.key])

    # Read from Secret Manager when an instance starts; never a plain environment variable.
    secret_environment_variables {
      key        = local.env_gemini_api_key
      project_id = var.project
      secret     = var.gemini_key_secret
      version    = var.gemini_key_version
    }
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.datastore_user,
    google_secret_manager_secret_iam_member.exec_reads_gemini_key,
  ]
}
