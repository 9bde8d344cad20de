# Example root: one agentgraph stack in one project. `infra/deploy.sh PROJECT REGION` applies it.

provider "google" {
  project = var.project
  region  = var.region
}

provider "google-beta" {
  project = var.project
  region  = var.region
}

locals {
  repo_root = "${path.root}/.."
}

module "agentgraph" {
  source = "./modules/agentgraph"

  project            = var.project
  region             = var.region
  pools              = var.pools
  gemini_key_secret  = var.gemini_key_secret
  allowed_invokers   = var.allowed_invokers
  tool_modules       = var.tool_modules
  http_allowed_hosts = var.http_allowed_hosts
  attach_buckets     = var.attach_buckets
  api_admins         = var.api_admins
  api_audiences      = var.api_audiences
  owner_limits       = var.owner_limits
  model_limits       = var.model_limits

  source_archive         = coalesce(var.source_archive, "${local.repo_root}/build/function-source.zip")
  firestore_rules_file   = "${local.repo_root}/firestore.rules"
  firestore_indexes_file = "${local.repo_root}/firestore.indexes.json"

  firestore_delete_protection = var.firestore_delete_protection
}
