# Function source: the archive `make package` builds (functions/main.py, the agentgraph package,
# requirements.txt) is uploaded under a name that carries its hash, so a changed archive
# redeploys every function and an unchanged one redeploys none.

locals {
  source_archive_md5 = fileexists(var.source_archive) ? filemd5(var.source_archive) : "missing"
}

resource "google_storage_bucket" "source" {
  project                     = var.project
  name                        = "${var.project}-agentgraph-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Superseded archives are replaced objects: keep a few for a rollback, then delete.
  lifecycle_rule {
    condition {
      num_newer_versions = 3
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_object" "source" {
  bucket = google_storage_bucket.source.name
  name   = "function-source-${local.source_archive_md5}.zip"
  source = var.source_archive

  lifecycle {
    precondition {
      condition     = fileexists(var.source_archive)
      error_message = "The function source archive ${var.source_archive} does not exist: build it with `make package` first."
    }
  }
}

# Images of the built functions. Only the newest few are kept: old images are storage cost and
# nothing else (a rollback rebuilds from a source archive).
resource "google_artifact_registry_repository" "functions" {
  project       = var.project
  location      = var.region
  repository_id = "agentgraph-functions"
  description   = "Images of the agentgraph Cloud Functions"
  format        = "DOCKER"
  labels        = local.labels

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  cleanup_policies {
    id     = "delete-older-than-30-days"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}
