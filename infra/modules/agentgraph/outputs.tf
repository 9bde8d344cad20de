output "api_url" {
  description = "URL of the api function (callers need roles/run.invoker: var.allowed_invokers)."
  value       = google_cloudfunctions2_function.control["api"].service_config[0].uri
}

output "function_urls" {
  description = "URL of every function, by function name."
  value = {
    for f in concat(values(google_cloudfunctions2_function.control), values(google_cloudfunctions2_function.exec)) :
    f.name => f.service_config[0].uri
  }
}

output "retry_url" {
  description = "Where Cloud Tasks POSTs delayed retries (AGENTGRAPH_RETRY_URL of the exec functions)."
  value       = google_cloudfunctions2_function.control["retry"].service_config[0].uri
}

output "topics" {
  description = "Pub/Sub topic ids, by topic name."
  value       = local.topic_ids
}

output "run_requests_topic" {
  description = "Publish {graph, input, ...} here to start a run without calling the api."
  value       = google_pubsub_topic.run_requests.id
}

output "dead_letter_subscription" {
  description = "Pull subscription that keeps dead-lettered messages for 7 days."
  value       = google_pubsub_subscription.dead_letter.id
}

output "retry_queue" {
  description = "Cloud Tasks queue id of delayed retries."
  value       = google_cloud_tasks_queue.retries.id
}

output "firestore_database" {
  description = "Firestore database id (AGENTGRAPH_FIRESTORE_DATABASE)."
  value       = google_firestore_database.db.name
}

output "service_accounts" {
  description = "Service account email of each function role, plus the invoker and build accounts."
  value = merge(
    { for role, sa in google_service_account.runtime : role => sa.email },
    {
      invoker = google_service_account.invoker.email
      build   = google_service_account.build.email
    },
  )
}

output "source_bucket" {
  description = "Bucket that holds the uploaded function source archives."
  value       = google_storage_bucket.source.name
}

output "console_url" {
  description = "The web console on Firebase Hosting."
  value       = google_firebase_hosting_site.console.default_url
}

output "console_site_id" {
  description = "Firebase Hosting site of the console (deploy.sh uploads web/dist to it)."
  value       = google_firebase_hosting_site.console.site_id
}

output "console_firebase_config" {
  description = "The Firebase web config the console's config.json carries (not secret)."
  value = {
    projectId  = var.project
    appId      = google_firebase_web_app.console.app_id
    apiKey     = data.google_firebase_web_app_config.console.api_key
    authDomain = data.google_firebase_web_app_config.console.auth_domain
  }
}
