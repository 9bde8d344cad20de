"""firestore.rules and firestore.indexes.json, and how infra/ deploys them.

What the rules allow is tested on the emulator by tests/rules/ (node); these tests pin what can
be read without one: the collections named, no client writes, and the Terraform wiring.
"""

from __future__ import annotations

import json
import re

from agentgraph.core import names

from .tfconfig import REPO, TfConfig, block

RULES = REPO / "firestore.rules"
INDEXES = REPO / "firestore.indexes.json"

COLLECTIONS = {v for k, v in vars(names).items() if k.startswith("COLLECTION_")}


def index_shapes() -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
    spec = json.loads(INDEXES.read_text())
    return {
        (
            index["collectionGroup"],
            index["queryScope"],
            tuple((f["fieldPath"], f.get("order") or f["arrayConfig"]) for f in index["fields"]),
        )
        for index in spec["indexes"]
    }


def test_the_indexes_file_has_the_composite_indexes_the_queries_need() -> None:
    nodes, runs = names.COLLECTION_NODES, names.COLLECTION_RUNS
    assert index_shapes() == {
        # sweep: nodes of every run whose lease ran out / whose retry is overdue / that stayed
        # ready (its node-ready message lost) longer than the grace period
        (nodes, "COLLECTION_GROUP", (("status", "ASCENDING"), ("lease_until", "ASCENDING"))),
        (nodes, "COLLECTION_GROUP", (("status", "ASCENDING"), ("next_attempt_at", "ASCENDING"))),
        (nodes, "COLLECTION_GROUP", (("status", "ASCENDING"), ("updated_at", "ASCENDING"))),
        # api: a user's runs, newest first (idempotency keys are documents, not a query)
        (runs, "COLLECTION", (("owner", "ASCENDING"), ("created_at", "DESCENDING"))),
        # web console: a group's instances (a node_id range) in a status, counted or watched
        (nodes, "COLLECTION", (("status", "ASCENDING"), ("node_id", "ASCENDING"))),
        # web console: a map's items / a loop's iterations (children holds the controller),
        # counted, all or in a status
        (nodes, "COLLECTION", (("children", "CONTAINS"), ("node_id", "ASCENDING"))),
        (
            nodes,
            "COLLECTION",
            (("children", "CONTAINS"), ("status", "ASCENDING"), ("node_id", "ASCENDING")),
        ),
        # an owner's spend today, a sum() over their runs' nodes (FirestoreOwnerActivity)
        (nodes, "COLLECTION_GROUP", (("owner", "ASCENDING"), ("run_created_at", "ASCENDING"))),
    }


def test_terraform_deploys_every_index_of_the_file(module_tf: TfConfig, root_tf: TfConfig) -> None:
    index = module_tf.of_type("google_firestore_index")["from_file"]
    assert index["for_each"] == "${local.firestore_indexes}"
    assert (
        "jsondecode(file(var.firestore_indexes_file)).indexes"
        in module_tf.locals["firestore_indexes"]
    )
    assert index["collection"] == "${each.value.collectionGroup}"
    assert index["query_scope"] == "${each.value.queryScope}"
    fields = index["dynamic"][0]["fields"]
    assert fields["for_each"] == "${each.value.fields}"
    assert (
        root_tf.modules["agentgraph"]["firestore_indexes_file"]
        == "${local.repo_root}/firestore.indexes.json"
    )
    assert root_tf.locals["repo_root"] == "${path.root}/.."


def test_large_texts_no_query_reads_are_exempt_from_indexing() -> None:
    overrides = json.loads(INDEXES.read_text())["fieldOverrides"]
    assert all(o["indexes"] == [] for o in overrides), "only exemptions are deployed"
    assert {(o["collectionGroup"], o["fieldPath"]) for o in overrides} == {
        (names.COLLECTION_RUNS, "graph_json"),
        (names.COLLECTION_RUNS, "input_json"),
        (names.COLLECTION_RUNS, "outputs_json"),
        (names.COLLECTION_NODES, "output_json"),
        (names.COLLECTION_NODES, "partial"),
        (names.COLLECTION_CHUNKS, "data"),
    }
    queried = {"status", "lease_until", "next_attempt_at", "updated_at", "owner", "created_at"}
    assert not queried & {o["fieldPath"] for o in overrides}


def test_terraform_deploys_every_exemption_of_the_file(module_tf: TfConfig) -> None:
    field = module_tf.of_type("google_firestore_field")["unindexed"]
    assert field["for_each"] == "${local.firestore_unindexed_fields}"
    assert (
        "jsondecode(file(var.firestore_indexes_file)).fieldOverrides"
        in module_tf.locals["firestore_unindexed_fields"]
    )
    assert field["collection"] == "${each.value.collectionGroup}"
    assert field["field"] == "${each.value.fieldPath}"
    assert block(field, "index_config") == {}


def test_the_released_rules_are_the_repository_file(module_tf: TfConfig, root_tf: TfConfig) -> None:
    ruleset = module_tf.of_type("google_firebaserules_ruleset")["firestore"]
    files = block(block(ruleset, "source"), "files")
    assert files["content"] == "${file(var.firestore_rules_file)}"
    release = module_tf.of_type("google_firebaserules_release")["firestore"]
    assert release["name"] == "${local.rules_release}"
    assert '"cloud.firestore"' in module_tf.locals["rules_release"]
    assert "google_firebaserules_ruleset.firestore.name" in release["ruleset_name"]
    assert (
        root_tf.modules["agentgraph"]["firestore_rules_file"]
        == "${local.repo_root}/firestore.rules"
    )


def test_the_database_is_firestore_native(module_tf: TfConfig) -> None:
    db = module_tf.of_type("google_firestore_database")["db"]
    assert db["type"] == "FIRESTORE_NATIVE"


def test_the_rules_match_only_names_collections_and_expose_run_records() -> None:
    matched = set(re.findall(r"match\s+/([A-Za-z_]+)/\{", RULES.read_text())) - {"databases"}
    assert matched <= COLLECTIONS
    assert matched == {
        names.COLLECTION_RUNS,
        names.COLLECTION_NODES,
        names.COLLECTION_CHUNKS,
        names.COLLECTION_EVENTS,
        names.COLLECTION_STEPS,
    }


def test_the_rules_allow_no_client_writes() -> None:
    allows = re.findall(r"allow\s+([a-z, ]+):", RULES.read_text())
    assert allows, "the rules allow nothing at all"
    assert {op.strip() for ops in allows for op in ops.split(",")} == {"read"}


def test_subcollection_reads_check_the_parent_runs_owner() -> None:
    text = RULES.read_text()
    assert (
        "get(/databases/$(database)/documents/runs/$(run)).data.owner == request.auth.uid" in text
    )
    assert "request.auth.token.admin == true" in text
