# Topics and push subscriptions. Messages carry ids only (docs/design.md, "Messages and acks"),
# so topics use Google-managed encryption. Every push carries an OIDC token of the invoker
# account, and every push subscription dead-letters after var.dead_letter_max_delivery_attempts
# deliveries.

locals {
  # One push subscription per pool, so a slow pool never holds back another: node-ready
  # messages carry the attribute pool=<pool>, and Pub/Sub acks the others for that subscription
  # on its own. Pub/Sub never waits longer than 600 s for a push response: a node that runs
  # longer sees a redelivery, which the lease-based claim acks without running it twice.
  exec_subscriptions = {
    for pool, p in var.pools : pool => {
      name         = "agentgraph-exec-${pool}"
      topic        = google_pubsub_topic.node_ready.id
      filter       = "attributes.pool = \"${pool}\""
      endpoint     = google_cloudfunctions2_function.exec[pool].service_config[0].uri
      ack_deadline = min(600, max(10, p.timeout_s))
      min_backoff  = "10s"
      max_backoff  = "600s"
    }
  }

  # The control-plane push subscriptions, keyed by role (no pool has these names: var.pools).
  control_subscriptions = {
    complete = {
      name         = local.subscription_complete
      topic        = google_pubsub_topic.node_finished.id
      filter       = null
      endpoint     = google_cloudfunctions2_function.control["complete"].service_config[0].uri
      ack_deadline = 60
      min_backoff  = "1s"
      max_backoff  = "60s"
    }
    run_requests = {
      name         = local.subscription_run_requests
      topic        = google_pubsub_topic.run_requests.id
      filter       = null
      endpoint     = google_cloudfunctions2_function.control["start_from_event"].service_config[0].uri
      ack_deadline = 60
      min_backoff  = "5s"
      max_backoff  = "300s"
    }
  }
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

# Every push subscription: the invoker's OIDC token on each push, backoff, dead letters.
resource "google_pubsub_subscription" "push" {
  for_each = merge(local.exec_subscriptions, local.control_subscriptions)

  project              = var.project
  name                 = each.value.name
  topic                = each.value.topic
  filter               = each.value.filter
  ack_deadline_seconds = each.value.ack_deadline
  labels               = local.labels

  push_config {
    push_endpoint = each.value.endpoint

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = each.value.endpoint
    }
  }

  retry_policy {
    minimum_backoff = each.value.min_backoff
    maximum_backoff = each.value.max_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.dead_letter_max_delivery_attempts
  }

  # Never expire: an idle deployment must not lose its subscriptions after 31 days.
  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_service_iam_member.invoker]
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
