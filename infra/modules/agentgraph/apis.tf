# Google APIs the stack uses. Left enabled on destroy: other things in the project may use them,
# and an enabled API that is not called costs nothing.

locals {
  services = toset([
    "artifactregistry.googleapis.com", # images built from the function source
    "cloudbuild.googleapis.com",       # builds the functions
    "cloudfunctions.googleapis.com",   # Cloud Functions gen2
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",  # the sweep job
    "cloudtasks.googleapis.com",      # delayed retries
    "cloudtrace.googleapis.com",      # one trace per run (AGENTGRAPH_TRACE=gcp)
    "firebase.googleapis.com",        # the console's Firebase project and web app
    "firebasehosting.googleapis.com", # the console (web/dist)
    "identitytoolkit.googleapis.com", # Firebase Auth: the console's Google sign-in
    "firebaserules.googleapis.com",   # Firestore security rules
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # OIDC tokens for push, tasks and scheduler
    "logging.googleapis.com",
    "monitoring.googleapis.com", # run, node, token and retry metrics
    "pubsub.googleapis.com",
    "run.googleapis.com", # gen2 functions run as Cloud Run services
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  labels = merge({ app = "agentgraph" }, var.labels)
}

resource "google_project_service" "apis" {
  for_each = local.services

  project                    = var.project
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}
