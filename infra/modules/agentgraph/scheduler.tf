# Every minute: sweep re-dispatches nodes whose lease ran out (their exec died) and retries
# that are due. A missed tick is harmless, the next one does the same work, so no retries here.
resource "google_cloud_scheduler_job" "sweep" {
  project          = var.project
  region           = var.region
  name             = "agentgraph-sweep"
  description      = "Calls the agentgraph sweep function"
  schedule         = var.sweep_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "120s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.control["sweep"].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.control["sweep"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.invoker]
}
