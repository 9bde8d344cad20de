# State lives in Firestore (native mode). Indexes come from firestore.indexes.json at the repo
# root, the file the Firebase CLI and the emulator read too, so the two cannot drift.

locals {
  firestore_indexes = {
    for index in jsondecode(file(var.firestore_indexes_file)).indexes :
    "${index.collectionGroup}/${join("+", [for f in index.fields : f.fieldPath])}" => index
  }

  # Fields the file exempts from indexing: large JSON texts and chunks that no query filters
  # on, whose automatic index entries would only add write cost and latency.
  firestore_unindexed_fields = {
    for field in jsondecode(file(var.firestore_indexes_file)).fieldOverrides :
    "${field.collectionGroup}/${field.fieldPath}" => field
    if length(field.indexes) == 0
  }

  # Firestore rules releases are named cloud.firestore (default database) or
  # cloud.firestore/<database>.
  rules_release = var.firestore_database == "(default)" ? "cloud.firestore" : "cloud.firestore/${var.firestore_database}"
}

# Pessimistic concurrency: the server client libraries' default, and what the emulator that
# the tests run on does.
resource "google_firestore_database" "db" {
  project                           = var.project
  name                              = var.firestore_database
  location_id                       = coalesce(var.firestore_location, var.region)
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.firestore_delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.firestore_delete_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.apis]
}

resource "google_firestore_index" "from_file" {
  for_each = local.firestore_indexes

  project     = var.project
  database    = google_firestore_database.db.name
  collection  = each.value.collectionGroup
  query_scope = each.value.queryScope

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path   = fields.value.fieldPath
      order        = lookup(fields.value, "order", null)
      array_config = lookup(fields.value, "arrayConfig", null)
    }
  }
}

resource "google_firestore_field" "unindexed" {
  for_each = local.firestore_unindexed_fields

  project    = var.project
  database   = google_firestore_database.db.name
  collection = each.value.collectionGroup
  field      = each.value.fieldPath

  # An empty index_config removes the field's single-field indexes.
  index_config {}
}

resource "google_firebaserules_ruleset" "firestore" {
  project = var.project

  source {
    files {
      name    = "firestore.rules"
      content = file(var.firestore_rules_file)
    }
  }

  # A release always points at a ruleset: create the new one before the old one goes.
  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_firestore_database.db]
}

resource "google_firebaserules_release" "firestore" {
  project      = var.project
  name         = local.rules_release
  ruleset_name = "projects/${var.project}/rulesets/${google_firebaserules_ruleset.firestore.name}"

  lifecycle {
    replace_triggered_by = [google_firebaserules_ruleset.firestore]
  }
}
