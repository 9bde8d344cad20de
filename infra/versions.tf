terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.0"
    }
  }

  # State is local by default. For a team, keep it in a bucket instead:
  # backend "gcs" {
  #   bucket = "my-terraform-state"
  #   prefix = "agentgraph"
  # }
}
