# Topics and push subscriptions. Messages carry ids only (DESIGN.md), so topics use
# Google-managed encryption. Every push carries an OIDC token of the invoker account, and every
# push subscription dead-letters after var.dead_letter_max_delivery_attempts deliveries.

locals {
  # Pub/Sub never waits longer than 600 s for a push response. A node that runs longer sees a
  # redelivery, which the lease-based claim acks without running it twice.
  exec_ack_deadline = { for pool, p in var.pools : pool => min(600, max(10, p.timeout_s)) }
}

resource "google_pubsub_topic" "node_ready" {
  project = var.project
  name    = local.topic_node_ready
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "node_finished" {
  project = var.project
  name    = local.topic_node_finished
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "run_requests" {
  project = var.project
  name    = local.topic_run_requests
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  project = var.project
  name    = local.topic_dead_letter
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

# One subscription per pool, so a slow pool never holds back another: node-ready messages carry
# the attribute pool=<pool>, and Pub/Sub acks the others for this subscription on its own.
resource "google_pubsub_subscription" "exec" {
  for_each = var.pools

  project              = var.project
  name                 = "agentgraph-exec-${each.key}"
  topic                = google_pubsub_topic.node_ready.id
  filter               = "attributes.pool = \"${each.key}\""
  ack_deadline_seconds = local.exec_ack_deadline[each.key]
  labels               = local.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.exec[each.key].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.exec[each.key].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.dead_letter_max_delivery_attempts
  }

  # Never expire: an idle deployment must not lose its subscriptions after 31 days.
  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_service_iam_member.invoker_exec]
}

resource "google_pubsub_subscription" "complete" {
  project              = var.project
  name                 = local.subscription_complete
  topic                = google_pubsub_topic.node_finished.id
  ack_deadline_seconds = 60
  labels               = local.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.complete.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.complete.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "1s"
    maximum_backoff = "60s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.dead_letter_max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_service_iam_member.invoker_complete]
}

resource "google_pubsub_subscription" "run_requests" {
  project              = var.project
  name                 = local.subscription_run_requests
  topic                = google_pubsub_topic.run_requests.id
  ack_deadline_seconds = 60
  labels               = local.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.start_from_event.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.start_from_event.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "5s"
    maximum_backoff = "300s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.dead_letter_max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_service_iam_member.invoker_start_from_event]
}

# Pull subscription that keeps dead letters for a week, for `gcloud pubsub subscriptions pull`:
# a message published to a topic without subscriptions would be lost.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project
  name                       = local.subscription_dead_letter
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}
