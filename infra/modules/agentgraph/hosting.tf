# The web console (web/dist, built by `make web`) on Firebase Hosting, with Firebase Auth's
# Google sign-in. Terraform makes the Firebase project, the Hosting site and the web app whose
# config the console reads. The files are not Terraform's: deploy.sh writes config.json from
# the outputs and publishes web/dist with firebase-tools (infra/hosting.sh), whose serving
# config sends /api/** to the api function (same origin, so the api needs no CORS; the api
# drops the /api prefix) and every other path to the console's files. Hosting calls the api
# without a Google identity, so a deployment that uses the console lists "allUsers" in
# var.allowed_invokers: the api still verifies every caller's Firebase ID token itself.

resource "google_firebase_project" "console" {
  provider = google-beta
  project  = var.project

  depends_on = [google_project_service.apis]
}

resource "google_firebase_web_app" "console" {
  provider     = google-beta
  project      = var.project
  display_name = "agentgraph console"

  depends_on = [google_firebase_project.console]
}

data "google_firebase_web_app_config" "console" {
  provider   = google-beta
  project    = var.project
  web_app_id = google_firebase_web_app.console.app_id
}

resource "google_firebase_hosting_site" "console" {
  provider = google-beta
  project  = var.project
  site_id  = coalesce(var.console_site_id, "${var.project}-agentgraph")
  app_id   = google_firebase_web_app.console.app_id
}
