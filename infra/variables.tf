variable "project" {
  description = "Google Cloud project id to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, queue, scheduler job and Firestore database."
  type        = string
  default     = "us-central1"
}

variable "pools" {
  description = "Executor pools (pool name => sizing). Every pool a graph names needs an entry; \"default\" is the graphs' default pool."
  type = map(object({
    memory          = string
    timeout_s       = number
    max_instances   = number
    concurrency     = number
    cpu             = optional(string)
    max_concurrency = optional(string, "")
  }))
  default = {
    default = {
      memory        = "512Mi"
      timeout_s     = 540
      max_instances = 20
      concurrency   = 8
    }
  }
}

variable "gemini_key_secret" {
  description = "Secret Manager secret id holding the Gemini API key (create it first, see README)."
  type        = string
  default     = "gemini-api-key"
}

variable "tool_modules" {
  description = "Python modules in the function source whose @tool functions the functions load."
  type        = list(string)
  default     = []
}

variable "http_allowed_hosts" {
  description = "Host names the built-in http_get tool may fetch (empty: it refuses every URL)."
  type        = list(string)
  default     = []
}

variable "attach_buckets" {
  description = "Buckets whose gs:// objects agents may attach (empty: none)."
  type        = list(string)
  default     = []
}

variable "allowed_invokers" {
  description = "IAM members allowed to call the api, e.g. [\"user:ada@example.com\"]."
  type        = list(string)
  default     = []
}

variable "api_admins" {
  description = "Google identities (uids or emails) the api treats as admins."
  type        = list(string)
  default     = []
}

variable "api_audiences" {
  description = "Extra audiences the api accepts in Google ID tokens (its own URL always is)."
  type        = list(string)
  default     = []
}

variable "owner_limits" {
  description = "Per-owner limits: runs_per_minute, running_runs, daily_usd, daily_tokens."
  type = object({
    runs_per_minute = optional(number, 60)
    running_runs    = optional(number, 20)
    daily_usd       = optional(number, 20)
    daily_tokens    = optional(number, 5000000)
  })
  default = {}
}

variable "model_limits" {
  description = "Per-model limits across the deployment (concurrency, rate_per_s: \"MODEL=N,*=N\") and the circuit breaker (breaker_failures, breaker_window_s, breaker_cooldown_s)."
  type = object({
    concurrency        = optional(string, "")
    rate_per_s         = optional(string, "")
    breaker_failures   = optional(number, 5)
    breaker_window_s   = optional(number, 60)
    breaker_cooldown_s = optional(number, 30)
  })
  default = {}
}

variable "source_archive" {
  description = "Function source zip; defaults to build/function-source.zip at the repository root (`make package`)."
  type        = string
  default     = null
}

variable "firestore_delete_protection" {
  description = "Keep the Firestore database and its data on destroy (see infra/destroy.sh)."
  type        = bool
  default     = true
}
