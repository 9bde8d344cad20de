# The runs' scratch space: the built-in read_run_file / write_run_file tools keep a run's
# files at gs://<bucket>/runs/<run_id>/ (agentgraph/backends/gcp/scratch.py). Only exec
# functions run tools, so only exec's service account may use the bucket, and only its
# objects (roles/storage.objectUser on this bucket: read, list, write, replace).

resource "google_storage_bucket" "run_files" {
  project                     = var.project
  name                        = "${var.project}-agentgraph-run-files"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = local.labels

  # Versioning keeps a replaced file for a day (a write replaces a file whole).
  versioning {
    enabled = true
  }

  # Scratch files outlive their run by run_files_retention_days, then go.
  lifecycle_rule {
    condition {
      age = var.run_files_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "exec_uses_run_files" {
  bucket = google_storage_bucket.run_files.name
  role   = "roles/storage.objectUser"
  member = google_service_account.runtime["exec"].member
}
