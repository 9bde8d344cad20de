output "api_url" {
  description = "URL of the api function."
  value       = module.agentgraph.api_url
}

output "function_urls" {
  description = "URL of every function."
  value       = module.agentgraph.function_urls
}

output "retry_url" {
  description = "URL Cloud Tasks calls for delayed retries."
  value       = module.agentgraph.retry_url
}

output "run_requests_topic" {
  description = "Topic that starts runs from events."
  value       = module.agentgraph.run_requests_topic
}

output "dead_letter_subscription" {
  description = "Where messages that failed every delivery wait for inspection."
  value       = module.agentgraph.dead_letter_subscription
}

output "retry_queue" {
  description = "Cloud Tasks queue of delayed retries."
  value       = module.agentgraph.retry_queue
}

output "firestore_database" {
  description = "Firestore database id."
  value       = module.agentgraph.firestore_database
}

output "service_accounts" {
  description = "Service accounts by role."
  value       = module.agentgraph.service_accounts
}

output "console_url" {
  description = "The web console (Firebase Hosting)."
  value       = module.agentgraph.console_url
}

output "console_site_id" {
  description = "Firebase Hosting site of the console."
  value       = module.agentgraph.console_site_id
}

output "console_firebase_config" {
  description = "Firebase web config for the console's config.json."
  value       = module.agentgraph.console_firebase_config
}
