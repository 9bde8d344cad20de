# Delayed retries: exec creates a task with schedule_time = now + backoff and an OIDC token of
# the invoker account; Cloud Tasks POSTs it to the retry function, which re-publishes node-ready.
# The queue's own retry_config only covers a failed POST to retry (the backoff between node
# attempts is the task's schedule_time, set by the code).
resource "google_cloud_tasks_queue" "retries" {
  project  = var.project
  name     = local.retry_queue
  location = var.region

  rate_limits {
    max_dispatches_per_second = 50
    max_concurrent_dispatches = 100
  }

  retry_config {
    max_attempts       = 10
    max_retry_duration = "3600s"
    min_backoff        = "1s"
    max_backoff        = "300s"
    max_doublings      = 8
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.apis]
}
