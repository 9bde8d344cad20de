# The functions: api (HTTP, public door), exec-<pool> (one per pool), complete, retry,
# start_from_event and sweep. All run functions/main.py on python311 from the same archive; the
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
  }

  api_only_env = {
    (local.env_admins) = join(",", var.api_admins)
  }

  # exec schedules retries: where Cloud Tasks should POST them.
  exec_only_env = {
    (local.env_retry_url) = google_cloudfunctions2_function.retry.service_config[0].uri
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
}

resource "google_cloudfunctions2_function" "api" {
  project     = var.project
  location    = var.region
  name        = "api"
  description = "agentgraph HTTP API: start, inspect and cancel runs"
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = local.entry_api
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
    max_instance_count               = var.control_plane.max_instances
    max_instance_request_concurrency = var.control_plane.concurrency
    timeout_seconds                  = 60
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime["api"].email
    environment_variables            = merge(local.common_env, local.api_only_env)
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.datastore_user,
  ]
}

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

resource "google_cloudfunctions2_function" "complete" {
  project     = var.project
  location    = var.region
  name        = "complete"
  description = "agentgraph fan-in: records arrivals, enqueues children whose parents are all done"
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = local.entry_complete
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
    max_instance_count               = var.control_plane.max_instances
    max_instance_request_concurrency = var.control_plane.concurrency
    timeout_seconds                  = 60
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime["complete"].email
    environment_variables            = local.common_env
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.datastore_user,
  ]
}

resource "google_cloudfunctions2_function" "retry" {
  project     = var.project
  location    = var.region
  name        = "retry"
  description = "agentgraph delayed retry: called by Cloud Tasks, re-publishes node-ready"
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = local.entry_retry
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
    max_instance_count               = var.control_plane.max_instances
    max_instance_request_concurrency = var.control_plane.concurrency
    timeout_seconds                  = 60
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime["retry"].email
    environment_variables            = local.common_env
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.datastore_user,
  ]
}

resource "google_cloudfunctions2_function" "start_from_event" {
  project     = var.project
  location    = var.region
  name        = "start-from-event"
  description = "agentgraph: starts runs from messages on the run-requests topic"
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = local.entry_start_from_event
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
    max_instance_count               = var.control_plane.max_instances
    max_instance_request_concurrency = var.control_plane.concurrency
    timeout_seconds                  = 60
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime["start"].email
    environment_variables            = local.common_env
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.datastore_user,
  ]
}

resource "google_cloudfunctions2_function" "sweep" {
  project     = var.project
  location    = var.region
  name        = "sweep"
  description = "agentgraph sweep: re-dispatches expired leases and due retries (Cloud Scheduler, every minute)"
  labels      = local.labels

  build_config {
    runtime           = local.runtime
    entry_point       = local.entry_sweep
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
    available_memory = var.control_plane.memory
    available_cpu    = local.control_cpu
    # One sweep at a time is enough; two would only race for the same expired leases.
    min_instance_count               = 0
    max_instance_count               = 1
    max_instance_request_concurrency = 1
    timeout_seconds                  = 120
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.runtime["sweep"].email
    environment_variables            = local.common_env
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_project_iam_member.datastore_user,
  ]
}
