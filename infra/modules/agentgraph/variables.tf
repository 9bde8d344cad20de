variable "project" {
  description = "Google Cloud project id that hosts agentgraph."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Cloud Tasks queue, the scheduler job and the source bucket (e.g. europe-west1)."
  type        = string
}

variable "pools" {
  description = <<-EOT
    Executor pools: one exec-<pool> function and one push subscription filtered on the node-ready
    attribute pool=<pool> per entry. memory is a Cloud Run memory string ("512Mi", "1Gi"),
    timeout_s the function timeout (the subscription's ack deadline is min(timeout_s, 600)),
    max_instances caps the pool's parallelism (and so its Gemini spend rate), concurrency is the
    number of nodes one instance runs at once (node work is mostly waiting on Gemini). cpu is
    optional; it defaults to "1" when concurrency > 1 (Cloud Run requires a whole CPU for that).
    max_concurrency optionally caps concurrent model calls per instance, per model
    (AGENTGRAPH_MAX_CONCURRENCY, e.g. "gemini-2.5-pro=4,*=16"); empty means the code's default.
  EOT
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

  validation {
    condition     = length(var.pools) > 0
    error_message = "pools must name at least one pool (the graphs' default pool is \"default\")."
  }
  validation {
    condition     = alltrue([for name in keys(var.pools) : can(regex("^[a-z][a-z0-9-]{0,40}$", name))])
    error_message = "Each pool name must match ^[a-z][a-z0-9-]{0,40}$: it becomes the function name exec-<pool>."
  }
  validation {
    condition     = length(setintersection(keys(var.pools), ["api", "complete", "retry", "sweep"])) == 0
    error_message = "No pool may be named api, complete, retry or sweep: push subscriptions and invoker grants are keyed by pool for exec and by role for the other functions."
  }
  validation {
    condition     = alltrue([for p in values(var.pools) : p.timeout_s >= 60 && p.timeout_s <= 3600])
    error_message = "Each pool's timeout_s must be between 60 and 3600 seconds (HTTP functions of gen2 allow 3600; a node's timeout_s may use the pool's timeout less 30 s, see shared/agentgraph/core/timeouts.py)."
  }
  validation {
    condition     = alltrue([for p in values(var.pools) : p.max_instances >= 1 && p.concurrency >= 1 && p.concurrency <= 1000])
    error_message = "Each pool needs max_instances >= 1 and concurrency between 1 and 1000."
  }
}

variable "control_plane" {
  description = "Sizing of the api, complete, retry, start_from_event and sweep functions."
  type = object({
    memory        = optional(string, "512Mi")
    max_instances = optional(number, 20)
    concurrency   = optional(number, 20)
  })
  default = {}
}

variable "tool_modules" {
  description = "Python modules (dotted names importable from the function source) whose @tool functions every function loads (AGENTGRAPH_TOOLS): api and start_from_event validate tool names, exec runs them."
  type        = list(string)
  default     = []
}

variable "http_allowed_hosts" {
  description = "Host names the built-in http_get tool may fetch on exec (AGENTGRAPH_HTTP_ALLOWED_HOSTS); \"*.example.com\" allows subdomains. Empty: http_get refuses every URL."
  type        = list(string)
  default     = []
}

variable "attach_buckets" {
  description = "Buckets whose gs:// objects agents may attach (AGENTGRAPH_ATTACH_BUCKETS). Gemini on Vertex AI reads them with the project's identity, not the caller's, so list only buckets every api caller may read. Empty: no gs:// attachments."
  type        = list(string)
  default     = []
}

variable "run_files_retention_days" {
  description = "Days the runs' scratch files (read_run_file/write_run_file, gs://<project>-agentgraph-run-files/runs/<run_id>/) are kept before Cloud Storage deletes them."
  type        = number
  default     = 7
}

variable "gemini_key_secret" {
  description = "Secret Manager secret id (short name, same project) that holds the Gemini API key. Created outside Terraform so the key never enters the state."
  type        = string
  default     = "gemini-api-key"
}

variable "gemini_key_version" {
  description = "Version of the Gemini key secret the exec functions read at instance start (a number, or \"latest\")."
  type        = string
  default     = "latest"
}

variable "allowed_invokers" {
  description = "IAM members allowed to call the api function (e.g. \"user:ada@example.com\", \"group:team@example.com\", \"serviceAccount:ci@p.iam.gserviceaccount.com\")."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.allowed_invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet|allUsers|allAuthenticatedUsers)", m))])
    error_message = "Each allowed_invokers entry must be an IAM member such as \"user:ada@example.com\" or \"serviceAccount:x@p.iam.gserviceaccount.com\"."
  }
}

variable "api_admins" {
  description = "Google identities (uids or emails) the api treats as admins (AGENTGRAPH_ADMINS), besides Firebase tokens with the custom claim admin: true."
  type        = list(string)
  default     = []
}

variable "api_audiences" {
  description = "Extra audiences the api accepts in Google ID tokens (e.g. a custom domain's URL). The api's own URL (https://REGION-PROJECT.cloudfunctions.net/api) is always accepted; the audience is never taken from a request's headers."
  type        = list(string)
  default     = []
}

variable "owner_limits" {
  description = "Per-owner limits the api and exec enforce (429 with Retry-After at start; a node fails before a model call over the daily budget). Counted from the runs, with no counter document."
  type = object({
    runs_per_minute = optional(number, 60)
    running_runs    = optional(number, 20)
    daily_usd       = optional(number, 20)
    daily_tokens    = optional(number, 5000000)
  })
  default = {}

  validation {
    condition     = alltrue([for v in values(var.owner_limits) : v > 0])
    error_message = "Every owner limit must be a positive number."
  }
}

variable "model_limits" {
  description = "Per-model limits across the whole deployment, whatever the number of exec instances: concurrency (calls in flight, e.g. \"gemini-2.5-pro=4,*=16\") and rate_per_s (calls started per second, e.g. \"gemini-2.5-pro=2\"), empty = none; and the circuit breaker: breaker_failures consecutive 429/5xx within breaker_window_s open it for breaker_cooldown_s."
  type = object({
    concurrency        = optional(string, "")
    rate_per_s         = optional(string, "")
    breaker_failures   = optional(number, 5)
    breaker_window_s   = optional(number, 60)
    breaker_cooldown_s = optional(number, 30)
  })
  default = {}

  validation {
    condition = (
      var.model_limits.breaker_failures >= 1 && var.model_limits.breaker_failures <= 100
      && var.model_limits.breaker_window_s >= 1 && var.model_limits.breaker_window_s <= 3600
      && var.model_limits.breaker_cooldown_s >= 0.1 && var.model_limits.breaker_cooldown_s <= 3600
    )
    error_message = "breaker_failures must be 1..100, breaker_window_s 1..3600 and breaker_cooldown_s 0.1..3600."
  }
}

variable "source_archive" {
  description = "Path of the zip that holds functions/main.py, the agentgraph package and requirements.txt (built by `make package` into build/function-source.zip)."
  type        = string
}

variable "firestore_rules_file" {
  description = "Path of firestore.rules (released as the database's security rules)."
  type        = string
}

variable "firestore_indexes_file" {
  description = "Path of firestore.indexes.json; each entry of its \"indexes\" list becomes a google_firestore_index."
  type        = string
}

variable "firestore_database" {
  description = "Firestore database id. \"(default)\" is what Firebase web clients use unless told otherwise."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location (a region such as europe-west1, or a multi-region such as nam5/eur3). Defaults to var.region."
  type        = string
  default     = null
}

variable "firestore_delete_protection" {
  description = "Keep the Firestore database (and its data) when the stack is destroyed. Set to false and apply once before a destroy that should delete the data too."
  type        = bool
  default     = true
}

variable "sweep_schedule" {
  description = "Cron schedule of the sweep job (re-dispatches nodes whose lease expired, and retries that are due)."
  type        = string
  default     = "* * * * *"
}

variable "dead_letter_max_delivery_attempts" {
  description = "Deliveries of one Pub/Sub message before it goes to the dead-letter topic (5..100)."
  type        = number
  default     = 10

  validation {
    condition     = var.dead_letter_max_delivery_attempts >= 5 && var.dead_letter_max_delivery_attempts <= 100
    error_message = "dead_letter_max_delivery_attempts must be between 5 and 100 (Pub/Sub's limits)."
  }
}

variable "labels" {
  description = "Labels put on every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "telemetry" {
  description = "Where the functions send traces and metrics (AGENTGRAPH_TRACE): gcp (Cloud Trace and Cloud Monitoring, roles granted here) or off."
  type        = string
  default     = "gcp"

  validation {
    condition     = contains(["gcp", "off"], var.telemetry)
    error_message = "telemetry is gcp or off."
  }
}

variable "console_site_id" {
  description = "Firebase Hosting site id of the web console (default: <project>-agentgraph)."
  type        = string
  default     = null
}
