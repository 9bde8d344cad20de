# The web console (web/dist, built by `make web`) on Firebase Hosting, with Firebase Auth's
# Google sign-in. Terraform makes the Firebase project, the Hosting site, the web app whose
# config the console reads (config.json, written by deploy.sh from the outputs), and the
# site's serving config: /api/** goes to the api function (same origin, so the api needs no
# CORS; the api drops the /api prefix) and every other path to the console's files. The
# files themselves are uploaded by deploy.sh (the Hosting REST API: versions.populateFiles),
# which Terraform has no resource for.

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

resource "google_firebase_hosting_version" "console" {
  provider = google-beta
  site_id  = google_firebase_hosting_site.console.site_id

  config {
    rewrites {
      glob = "/api/**"
      run {
        service_id = google_cloudfunctions2_function.control["api"].name
        region     = var.region
      }
    }
    headers {
      glob = "**"
      headers = {
        "X-Content-Type-Options" = "nosniff"
        "Referrer-Policy"        = "same-origin"
      }
    }
  }
}

resource "google_firebase_hosting_release" "console" {
  provider     = google-beta
  site_id      = google_firebase_hosting_site.console.site_id
  version_name = google_firebase_hosting_version.console.name
  message      = "agentgraph console serving config"
}
