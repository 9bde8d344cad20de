# Identities. One service account per function role, each granted only what that role does;
# no primitive roles (owner/editor/viewer) anywhere (tests/infra checks it).

locals {
  # Runtime identities of the functions, keyed by role. All exec-<pool> functions share "exec".
  runtime_accounts = {
    api      = "agentgraph api: creates runs in Firestore and publishes their root nodes"
    start    = "agentgraph start_from_event: creates runs from run-request messages"
    exec     = "agentgraph exec-<pool>: runs nodes (Gemini, tools), schedules retries"
    complete = "agentgraph complete: fan-in of finished nodes, enqueues ready children"
    retry    = "agentgraph retry: re-publishes a node whose backoff is over"
    sweep    = "agentgraph sweep: re-dispatches nodes whose lease ran out"
  }

  # Which topics each role publishes to (what Engine does in each entry point); nothing else
  # may publish.
  publishes = {
    # start_run: root nodes that are ready, and node-finished for roots it decides to skip.
    api   = [local.topic_node_ready, local.topic_node_finished]
    start = [local.topic_node_ready, local.topic_node_finished]
    # execute: the outcome of a node (a retry goes to Cloud Tasks, not to a topic).
    exec = [local.topic_node_finished]
    # complete: ready children, and node-finished for children it skips or fails, so the
    # cascade goes through the same fan-in path.
    complete = [local.topic_node_ready, local.topic_node_finished]
    # retry and sweep: node-ready for a due retry or an expired lease.
    retry = [local.topic_node_ready]
    sweep = [local.topic_node_ready]
  }

  publish_grants = merge([
    for role, topics in local.publishes : {
      for topic in topics : "${role}/${topic}" => { role = role, topic = topic }
    }
  ]...)

  topic_ids = {
    (local.topic_node_ready)    = google_pubsub_topic.node_ready.id
    (local.topic_node_finished) = google_pubsub_topic.node_finished.id
    (local.topic_run_requests)  = google_pubsub_topic.run_requests.id
    (local.topic_dead_letter)   = google_pubsub_topic.dead_letter.id
  }

  pubsub_service_agent = "serviceAccount:${google_project_service_identity.pubsub.email}"

  # The functions only the invoker account calls, keyed as the exec ones by pool and the
  # others by role (no pool is named after a role: see var.pools).
  internal_functions = merge(
    google_cloudfunctions2_function.exec,
    { for role, f in google_cloudfunctions2_function.control : role => f if role != "api" },
  )
}

resource "google_service_account" "runtime" {
  for_each = local.runtime_accounts

  project      = var.project
  account_id   = "agentgraph-${each.key}"
  display_name = "agentgraph ${each.key}"
  description  = each.value

  depends_on = [google_project_service.apis]
}

# The one identity that Pub/Sub push, Cloud Tasks and Cloud Scheduler put in their OIDC tokens.
# It may invoke the internal functions and nothing else.
resource "google_service_account" "invoker" {
  project      = var.project
  account_id   = "agentgraph-invoker"
  display_name = "agentgraph push invoker"
  description  = "OIDC identity of Pub/Sub push, Cloud Tasks and Cloud Scheduler calls to the agentgraph functions"

  depends_on = [google_project_service.apis]
}

# Cloud Build runs the function builds as this account instead of a default one.
resource "google_service_account" "build" {
  project      = var.project
  account_id   = "agentgraph-build"
  display_name = "agentgraph function builds"
  description  = "Builds the agentgraph functions from the source archive"

  depends_on = [google_project_service.apis]
}

# --- Firestore ------------------------------------------------------------------------------
# Firestore access is granted at project level (there is no per-collection IAM); what each
# client may touch is the code's business, what browsers may read is firestore.rules'.
# retry keeps datastore.user: it reads the node's state before it requeues the attempt, so a
# task for a run that was cancelled in the meantime is dropped rather than re-published.
resource "google_project_iam_member" "datastore_user" {
  for_each = local.runtime_accounts

  project = var.project
  role    = "roles/datastore.user"
  member  = google_service_account.runtime[each.key].member
}

# --- Observability --------------------------------------------------------------------------
# Every function writes its spans to Cloud Trace and its metrics to Cloud Monitoring
# (agentgraph.observability, AGENTGRAPH_TRACE=gcp); both roles are write-only.
resource "google_project_iam_member" "trace_agent" {
  for_each = var.telemetry == "gcp" ? local.runtime_accounts : {}

  project = var.project
  role    = "roles/cloudtrace.agent"
  member  = google_service_account.runtime[each.key].member
}

resource "google_project_iam_member" "metric_writer" {
  for_each = var.telemetry == "gcp" ? local.runtime_accounts : {}

  project = var.project
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.runtime[each.key].member
}

# --- Pub/Sub --------------------------------------------------------------------------------
resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = local.publish_grants

  project = var.project
  topic   = local.topic_ids[each.value.topic]
  role    = "roles/pubsub.publisher"
  member  = google_service_account.runtime[each.value.role].member
}

resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.apis]
}

# Dead-lettering: the Pub/Sub service agent publishes the dead message to the dead-letter topic
# and acks it on the source subscription, so it needs publisher on the one and subscriber on the
# others.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project
  topic   = google_pubsub_topic.dead_letter.id
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = google_pubsub_subscription.push

  project      = var.project
  subscription = each.value.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Pub/Sub mints the push OIDC tokens as the invoker account. Projects created before
# 2021-04-08 need this grant for that; newer ones have it implicitly. Scoped to the one account.
resource "google_service_account_iam_member" "pubsub_mints_invoker_tokens" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# --- Cloud Tasks (exec schedules delayed retries) -------------------------------------------
resource "google_cloud_tasks_queue_iam_member" "exec_enqueues" {
  project  = var.project
  location = google_cloud_tasks_queue.retries.location
  name     = google_cloud_tasks_queue.retries.name
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.runtime["exec"].member
}

# A task that carries an OIDC token for the invoker account may only be created by someone who
# can act as that account.
resource "google_service_account_iam_member" "exec_acts_as_invoker" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.runtime["exec"].member
}

# --- Secret Manager (the Gemini key, for exec only, on that one secret) ---------------------
resource "google_secret_manager_secret_iam_member" "exec_reads_gemini_key" {
  project   = var.project
  secret_id = var.gemini_key_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime["exec"].member

  depends_on = [google_project_service.apis]
}

# --- Invokers -------------------------------------------------------------------------------
# The invoker account may call exactly the functions that push, tasks and scheduler target:
# every one but the api.
resource "google_cloud_run_service_iam_member" "invoker" {
  for_each = local.internal_functions

  project  = var.project
  location = each.value.location
  service  = each.value.name
  role     = "roles/run.invoker"
  member   = google_service_account.invoker.member
}

# The api is the one public door: reachable from anywhere, callable by the listed members only.
resource "google_cloud_run_service_iam_member" "api_invokers" {
  for_each = toset(var.allowed_invokers)

  project  = var.project
  location = google_cloudfunctions2_function.control["api"].location
  service  = google_cloudfunctions2_function.control["api"].name
  role     = "roles/run.invoker"
  member   = each.value
}

# --- Builds ---------------------------------------------------------------------------------
resource "google_project_iam_member" "build_logs" {
  project = var.project
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

# Cloud Functions copies the source archive into its own staging bucket (gcf-v2-sources-*),
# which does not exist before the first deploy, so reading it needs a project-level grant.
resource "google_project_iam_member" "build_reads_sources" {
  project = var.project
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member
}

resource "google_artifact_registry_repository_iam_member" "build_pushes_images" {
  project    = var.project
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}
