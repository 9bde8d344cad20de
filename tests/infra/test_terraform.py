"""The Terraform in infra/ deploys exactly what the code expects, and no more.

agentgraph.core.names is the one source of truth for topics, subscriptions, the queue, entry points
and environment variables; these tests hold the Terraform to it in both directions, and check
the security properties of the deployment (OIDC on every push, no primitive roles, the Gemini
key only as a secret).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from agentgraph.core import names

from .tfconfig import INFRA, TfConfig, block, blocks, hcl_object, walk_strings, with_each

POOL = "${pool}"  # the pool name, as the for expressions over var.pools spell it

# Function (google_cloudfunctions2_function.exec, or a key of .control) -> (names entry point,
# runtime service account role, ingress).
FUNCTIONS = {
    "api": (names.ENTRY_API, "api", "ALLOW_ALL"),
    "exec": (names.ENTRY_EXEC, "exec", "ALLOW_INTERNAL_ONLY"),
    "complete": (names.ENTRY_COMPLETE, "complete", "ALLOW_INTERNAL_ONLY"),
    "retry": (names.ENTRY_RETRY, "retry", "ALLOW_INTERNAL_ONLY"),
    "start_from_event": (names.ENTRY_START_FROM_EVENT, "start", "ALLOW_INTERNAL_ONLY"),
    "sweep": (names.ENTRY_SWEEP, "sweep", "ALLOW_INTERNAL_ONLY"),
}

# Every names.ENV_* is either set on the deployed functions or meaningful only locally. A new
# ENV_ constant fails test_every_names_env_constant_is_classified until it is put in one.
DEPLOYED_ENV = {
    names.ENV_BACKEND,
    names.ENV_PROJECT,
    names.ENV_REGION,
    names.ENV_FIRESTORE_DATABASE,
    names.ENV_RETRY_URL,
    names.ENV_TASKS_SERVICE_ACCOUNT,
    names.ENV_GEMINI_API_KEY,
    names.ENV_TOOLS,
    names.ENV_MAX_CONCURRENCY,
    names.ENV_POOL,
    names.ENV_ADMINS,
    names.ENV_API_AUDIENCE,
    names.ENV_LIMIT_RUNS_PER_MINUTE,
    names.ENV_LIMIT_RUNNING_RUNS,
    names.ENV_LIMIT_DAILY_USD,
    names.ENV_LIMIT_DAILY_TOKENS,
    names.ENV_TRACE,
    names.ENV_RUN_FILES_BUCKET,
    names.ENV_HTTP_ALLOWED_HOSTS,
    names.ENV_ATTACH_BUCKETS,
    names.ENV_MODEL_CONCURRENCY,
    names.ENV_MODEL_RATE,
    names.ENV_BREAKER_FAILURES,
    names.ENV_BREAKER_WINDOW_S,
    names.ENV_BREAKER_COOLDOWN_S,
    names.ENV_POOL_TIMEOUTS,
}
LOCAL_ONLY_ENV = {
    names.ENV_DB: "SQLite file of the local backend",
    names.ENV_FIRESTORE_EMULATOR: "emulator only",
    names.ENV_PUBSUB_EMULATOR: "emulator only",
    names.ENV_TASKS_EMULATOR: "emulator only",
    names.ENV_AUTH_MODE: "'off'/'emulator': emulators only; production keeps the default",
    names.ENV_GEMINI_BASE_URL: "points google-genai at a local stub",
    names.ENV_API_URL: "the CLI's --api: a caller's setting, not a function's",
    names.ENV_API_TOKEN: "the CLI's --token: a caller's setting, not a function's",
    names.ENV_ATTACH_ROOT: "local paths in `attach` are read by the local backend only",
    names.ENV_RUN_FILES: "the local backend's scratch folder (GCP uses the bucket)",
    names.ENV_HTTP_MAX_BYTES: "optional tuning of http_get; the deployment keeps the default",
    names.ENV_HTTP_TIMEOUT_S: "optional tuning of http_get; the deployment keeps the default",
    names.ENV_RUN_FILE_MAX_BYTES: "optional cap of run files; the deployment keeps the default",
    names.ENV_RUN_FILES_MAX_TOTAL_BYTES: "optional cap; the deployment keeps the default",
    names.ENV_GEMINI_PROCESSES: "the local backend's SDK worker processes; functions call in-process",
}
# Deployed variables that only some functions get; every other deployed one is on all of them.
ENV_ONLY_ON = {
    names.ENV_RETRY_URL: {"exec"},
    names.ENV_GEMINI_API_KEY: {"exec"},
    names.ENV_MAX_CONCURRENCY: {"exec"},
    names.ENV_POOL: {"exec"},
    names.ENV_MODEL_CONCURRENCY: {"exec"},
    names.ENV_MODEL_RATE: {"exec"},
    names.ENV_BREAKER_FAILURES: {"exec"},
    names.ENV_BREAKER_WINDOW_S: {"exec"},
    names.ENV_BREAKER_COOLDOWN_S: {"exec"},
    names.ENV_ADMINS: {"api"},
    names.ENV_API_AUDIENCE: {"api"},
    names.ENV_RUN_FILES_BUCKET: {"exec"},
    names.ENV_HTTP_ALLOWED_HOSTS: {"exec"},
    names.ENV_ATTACH_BUCKETS: {"exec"},
}

PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}


def constants(prefix: str) -> dict[str, str]:
    return {k: v for k, v in vars(names).items() if k.startswith(prefix) and isinstance(v, str)}


# The deployed names of the control-plane functions; exec-<pool> is names.exec_function(pool).
CONTROL_FUNCTION_NAMES = {
    "api": "api",
    "complete": "complete",
    "retry": "retry",
    "start_from_event": "start-from-event",
    "sweep": "sweep",
}


def functions(tf: TfConfig) -> dict[str, dict[str, Any]]:
    """Every function as deployed, by FUNCTIONS key: exec (for_each over pools), and each
    instance of control (for_each over local.control_functions, merged over its defaults)."""
    declared = tf.of_type("google_cloudfunctions2_function")
    assert set(declared) == {"exec", "control"}
    control = declared["control"]
    assert control["for_each"] == (
        "${{for key, f in local.control_functions : key => merge(local.control_defaults, f)}}"
    )
    defaults = tf.locals["control_defaults"]
    return {
        "exec": declared["exec"],
        **{
            key: with_each(control, {**defaults, **f})
            for key, f in tf.locals["control_functions"].items()
        },
    }


def function_env(tf: TfConfig, fn: dict[str, Any]) -> set[str]:
    service = block(fn, "service_config")
    env = set(tf.env_map(service.get("environment_variables", {})))
    secrets = {tf.resolve(s["key"]) for s in blocks(service, "secret_environment_variables")}
    return env | secrets


def push_subscriptions(tf: TfConfig) -> dict[str, dict[str, Any]]:
    """Every push subscription as deployed: "exec" (one per pool, the pool spelled POOL), and
    each of local.control_subscriptions, by key."""
    declared = tf.of_type("google_pubsub_subscription")
    push = declared["push"]
    assert push["for_each"] == "${merge(local.exec_subscriptions, local.control_subscriptions)}"
    per_pool = re.fullmatch(
        r"\$\{\{for pool, p in var\.pools : pool => (\{.*\})\}\}", tf.locals["exec_subscriptions"]
    )
    assert per_pool, (
        f"exec_subscriptions is not one entry per pool: {tf.locals['exec_subscriptions']}"
    )
    return {
        "exec": with_each(push, hcl_object(per_pool.group(1))),
        **{key: with_each(push, sub) for key, sub in tf.locals["control_subscriptions"].items()},
    }


def subscriptions(tf: TfConfig) -> dict[str, dict[str, Any]]:
    pull = {n: s for n, s in tf.of_type("google_pubsub_subscription").items() if n != "push"}
    assert not [n for n, s in pull.items() if "push_config" in s], "push ones belong in push"
    return {**pull, **push_subscriptions(tf)}


def referenced_function(expression: str) -> str:
    """The FUNCTIONS key an expression refers to: exec, or the key of a control function."""
    match = re.search(r'google_cloudfunctions2_function\.([a-z_]+)(?:\["([a-z_]+)"\])?', expression)
    assert match, f"{expression!r} does not refer to a function"
    if match.group(1) == "control":
        assert match.group(2), f"{expression!r} refers to no one control function"
        return match.group(2)
    return match.group(1)


# --- names: topics, subscriptions, queue ------------------------------------------------------


def test_declared_topics_are_exactly_the_names_topics(module_tf: TfConfig) -> None:
    declared = [
        module_tf.resolve(t["name"]) for t in module_tf.of_type("google_pubsub_topic").values()
    ]
    assert sorted(declared) == sorted(constants("TOPIC_").values())


def test_each_pool_gets_one_exec_subscription_filtered_on_its_pool(module_tf: TfConfig) -> None:
    exec_sub = push_subscriptions(module_tf)["exec"]
    assert exec_sub["name"] == names.exec_subscription(POOL)
    assert exec_sub["filter"] == names.pool_filter(POOL)
    assert "google_pubsub_topic.node_ready" in exec_sub["topic"]
    assert referenced_function(block(exec_sub, "push_config")["push_endpoint"]) == "exec"
    assert "exec[pool]" in block(exec_sub, "push_config")["push_endpoint"]


def test_other_subscriptions_are_exactly_the_names_subscriptions(module_tf: TfConfig) -> None:
    subs = subscriptions(module_tf)
    declared = sorted(module_tf.resolve(s["name"]) for n, s in subs.items() if n != "exec")
    assert declared == sorted(constants("SUBSCRIPTION_").values())
    assert all(s.get("filter") is None for n, s in subs.items() if n != "exec")


def test_each_subscription_listens_to_the_topic_its_function_consumes(module_tf: TfConfig) -> None:
    subs = subscriptions(module_tf)
    expected = {
        "exec": ("node_ready", "exec"),
        "complete": ("node_finished", "complete"),
        "run_requests": ("run_requests", "start_from_event"),
    }
    for name, (topic, function) in expected.items():
        assert subs[name]["topic"] == f"${{google_pubsub_topic.{topic}.id}}"
        assert referenced_function(block(subs[name], "push_config")["push_endpoint"]) == function
    assert subs["dead_letter"]["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert "push_config" not in subs["dead_letter"], "dead letters wait in a pull subscription"


def test_the_example_deploys_the_default_pool(root_tf: TfConfig) -> None:
    pools = root_tf.variables["pools"]["default"]
    assert names.DEFAULT_POOL in pools
    assert root_tf.modules["agentgraph"]["pools"] == "${var.pools}"


def test_the_retry_queue_is_the_names_queue_with_rate_limits_and_retries(
    module_tf: TfConfig,
) -> None:
    queues = module_tf.of_type("google_cloud_tasks_queue")
    assert [module_tf.resolve(q["name"]) for q in queues.values()] == [names.RETRY_QUEUE]
    queue = queues["retries"]
    limits = block(queue, "rate_limits")
    assert limits["max_dispatches_per_second"] > 0 and limits["max_concurrent_dispatches"] > 0
    retry = block(queue, "retry_config")
    assert retry["max_attempts"] > 1
    assert {"min_backoff", "max_backoff", "max_doublings"} <= retry.keys()


def test_names_tf_mirrors_agentgraph_names(module_tf: TfConfig) -> None:
    mirrored = module_tf.locals_by_file["names.tf"]
    all_constants = {v for v in vars(names).values() if isinstance(v, str)}
    strays = {k: v for k, v in mirrored.items() if v not in all_constants}
    assert not strays, f"names.tf spells names that agentgraph.core.names does not have: {strays}"


# --- functions: entry points, runtime, source, sizing -----------------------------------------


def test_every_entry_point_is_deployed_and_nothing_else(module_tf: TfConfig) -> None:
    deployed = [
        module_tf.resolve(block(fn, "build_config")["entry_point"])
        for fn in functions(module_tf).values()
    ]
    assert sorted(deployed) == sorted(names.ENTRY_POINTS)


@pytest.mark.parametrize("resource", sorted(FUNCTIONS))
def test_each_function_runs_its_entry_point_as_its_own_service_account(
    module_tf: TfConfig, resource: str
) -> None:
    entry_point, role, _ = FUNCTIONS[resource]
    fn = functions(module_tf)[resource]
    assert module_tf.resolve(block(fn, "build_config")["entry_point"]) == entry_point
    account = block(fn, "service_config")["service_account_email"]
    assert account == f'${{google_service_account.runtime["{role}"].email}}'


def test_the_control_functions_keep_their_deployed_names(module_tf: TfConfig) -> None:
    fns = functions(module_tf)
    assert {key: fns[key]["name"] for key in CONTROL_FUNCTION_NAMES} == CONTROL_FUNCTION_NAMES


def test_sweep_runs_alone_and_the_other_control_functions_as_sized(module_tf: TfConfig) -> None:
    for key, fn in functions(module_tf).items():
        if key == "exec":
            continue
        service = block(fn, "service_config")
        assert service["available_memory"] == "${var.control_plane.memory}"
        if key == "sweep":  # two sweeps would only race for the same expired leases
            assert service["max_instance_count"] == 1
            assert service["max_instance_request_concurrency"] == 1
            assert service["timeout_seconds"] == 120
        else:
            assert service["max_instance_count"] == "${var.control_plane.max_instances}"
            assert service["max_instance_request_concurrency"] == "${var.control_plane.concurrency}"
            assert service["timeout_seconds"] == 60


def test_there_is_one_exec_function_per_pool_named_by_names(module_tf: TfConfig) -> None:
    fn = functions(module_tf)["exec"]
    assert fn["for_each"] == "${var.pools}"
    assert fn["name"] == names.exec_function("${each.key}")
    service = block(fn, "service_config")
    assert service["timeout_seconds"] == "${each.value.timeout_s}"
    assert service["max_instance_count"] == "${each.value.max_instances}"
    assert service["max_instance_request_concurrency"] == "${each.value.concurrency}"
    assert service["available_memory"] == "${each.value.memory}"


@pytest.mark.parametrize("resource", sorted(FUNCTIONS))
def test_each_function_builds_python311_from_the_uploaded_archive(
    module_tf: TfConfig, resource: str
) -> None:
    build = block(functions(module_tf)[resource], "build_config")
    assert module_tf.resolve(build["runtime"]) == "python311"
    storage = block(block(build, "source"), "storage_source")
    assert storage["bucket"] == "${google_storage_bucket.source.name}"
    assert storage["object"] == "${google_storage_bucket_object.source.name}"
    assert build["service_account"] == "${google_service_account.build.id}"


def test_the_source_object_is_the_archive_and_renamed_when_it_changes(
    module_tf: TfConfig, root_tf: TfConfig
) -> None:
    obj = module_tf.of_type("google_storage_bucket_object")["source"]
    assert obj["source"] == "${var.source_archive}"
    assert "${local.source_archive_md5}" in obj["name"]
    assert "filemd5(var.source_archive)" in module_tf.locals["source_archive_md5"]
    assert "build/function-source.zip" in root_tf.modules["agentgraph"]["source_archive"]


@pytest.mark.parametrize("resource", sorted(FUNCTIONS))
def test_only_the_api_accepts_traffic_from_outside_the_project(
    module_tf: TfConfig, resource: str
) -> None:
    _, _, ingress = FUNCTIONS[resource]
    assert block(functions(module_tf)[resource], "service_config")["ingress_settings"] == ingress


# --- environment ---------------------------------------------------------------------------


def test_every_names_env_constant_is_classified() -> None:
    env_constants = set(constants("ENV_").values())
    assert DEPLOYED_ENV.isdisjoint(LOCAL_ONLY_ENV)
    assert env_constants == DEPLOYED_ENV | set(LOCAL_ONLY_ENV), (
        "classify each names.ENV_* in tests/infra/test_terraform.py as DEPLOYED_ENV (then set it "
        "in infra/modules/agentgraph/functions.tf) or LOCAL_ONLY_ENV"
    )


def test_the_deployment_sets_every_deployed_env_var_and_only_names_env_vars(
    module_tf: TfConfig,
) -> None:
    declared = set().union(*(function_env(module_tf, fn) for fn in functions(module_tf).values()))
    assert declared == DEPLOYED_ENV
    assert not declared & set(LOCAL_ONLY_ENV)


@pytest.mark.parametrize("resource", sorted(FUNCTIONS))
def test_each_function_gets_the_common_env_and_only_its_own_extras(
    module_tf: TfConfig, resource: str
) -> None:
    env = function_env(module_tf, functions(module_tf)[resource])
    expected = {var for var in DEPLOYED_ENV if resource in ENV_ONLY_ON.get(var, set(FUNCTIONS))}
    assert env == expected


def test_the_api_audience_is_configuration_never_a_request_header(module_tf: TfConfig) -> None:
    env = module_tf.env_map("${local.api_only_env}")
    audience = env[names.ENV_API_AUDIENCE]
    assert "local.api_own_url" in audience and "var.api_audiences" in audience
    own = module_tf.locals["api_own_url"]
    assert own == "https://${var.region}-${var.project}.cloudfunctions.net/api"


def test_owner_limits_reach_every_function_from_one_variable(module_tf: TfConfig) -> None:
    common = module_tf.env_map("${local.common_env}")
    for env, field in (
        (names.ENV_LIMIT_RUNS_PER_MINUTE, "runs_per_minute"),
        (names.ENV_LIMIT_RUNNING_RUNS, "running_runs"),
        (names.ENV_LIMIT_DAILY_USD, "daily_usd"),
        (names.ENV_LIMIT_DAILY_TOKENS, "daily_tokens"),
    ):
        assert common[env] == f"${{tostring(var.owner_limits.{field})}}"


def test_model_limits_and_the_breaker_reach_exec_from_one_variable(module_tf: TfConfig) -> None:
    env = module_tf.env_map("${local.exec_only_env}")
    for name, field in (
        (names.ENV_MODEL_CONCURRENCY, "concurrency"),
        (names.ENV_MODEL_RATE, "rate_per_s"),
    ):
        assert env[name] == f"${{var.model_limits.{field}}}"
    for name, field in (
        (names.ENV_BREAKER_FAILURES, "breaker_failures"),
        (names.ENV_BREAKER_WINDOW_S, "breaker_window_s"),
        (names.ENV_BREAKER_COOLDOWN_S, "breaker_cooldown_s"),
    ):
        assert env[name] == f"${{tostring(var.model_limits.{field})}}"


def test_exec_learns_the_retry_url_and_the_tasks_identity_from_terraform(
    module_tf: TfConfig,
) -> None:
    env = module_tf.env_map("${local.exec_only_env}")
    assert (
        env[names.ENV_RETRY_URL]
        == '${google_cloudfunctions2_function.control["retry"].service_config[0].uri}'
    )
    common = module_tf.env_map("${local.common_env}")
    assert common[names.ENV_TASKS_SERVICE_ACCOUNT] == "${google_service_account.invoker.email}"
    assert common[names.ENV_BACKEND] == "gcp"
    assert common[names.ENV_PROJECT] == "${var.project}"
    assert common[names.ENV_TOOLS] == '${join(",", var.tool_modules)}'
    per_pool = module_tf.env_map("${local.exec_pool_env}")
    assert "p.max_concurrency" in per_pool[names.ENV_MAX_CONCURRENCY]
    assert re.search(
        r"\(local\.env_pool\)(\}\")?\s*[=:]\s*\"?(\$\{)?pool\b", per_pool[names.ENV_POOL]
    )
    api = module_tf.env_map("${local.api_only_env}")
    assert api[names.ENV_ADMINS] == '${join(",", var.api_admins)}'


def test_exec_learns_the_run_files_bucket_and_the_tool_allowlists_from_terraform(
    module_tf: TfConfig, root_tf: TfConfig
) -> None:
    env = module_tf.env_map("${local.exec_only_env}")
    assert env[names.ENV_RUN_FILES_BUCKET] == "${google_storage_bucket.run_files.name}"
    assert env[names.ENV_HTTP_ALLOWED_HOSTS] == '${join(",", var.http_allowed_hosts)}'
    assert module_tf.variables["http_allowed_hosts"]["default"] == []  # refuse all by default
    assert root_tf.modules["agentgraph"]["http_allowed_hosts"] == "${var.http_allowed_hosts}"
    assert env[names.ENV_ATTACH_BUCKETS] == '${join(",", var.attach_buckets)}'
    assert module_tf.variables["attach_buckets"]["default"] == []


# --- run files ---------------------------------------------------------------------------------


def test_the_run_files_bucket_is_private_and_forgets_scratch_files(module_tf: TfConfig) -> None:
    from agentgraph.backends.gcp.scratch import PREFIX

    bucket = module_tf.of_type("google_storage_bucket")["run_files"]
    assert bucket["name"] == "${var.project}-agentgraph-run-files"
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    ages = [block(rule, "condition").get("age") for rule in blocks(bucket, "lifecycle_rule")]
    assert "${var.run_files_retention_days}" in ages
    assert PREFIX == "runs"  # objects at gs://<bucket>/runs/<run_id>/<path>


def test_only_exec_may_use_the_run_files_and_only_that_bucket(module_tf: TfConfig) -> None:
    grants = module_tf.of_type("google_storage_bucket_iam_member")
    run_files = {n: g for n, g in grants.items() if "run_files" in g["bucket"]}
    assert list(run_files) == ["exec_uses_run_files"]
    grant = run_files["exec_uses_run_files"]
    assert grant["bucket"] == "${google_storage_bucket.run_files.name}"
    assert grant["role"] == "roles/storage.objectUser"
    assert grant["member"] == '${google_service_account.runtime["exec"].member}'


# --- the Gemini key ---------------------------------------------------------------------------


def test_the_gemini_key_is_only_a_secret_environment_variable_of_exec(module_tf: TfConfig) -> None:
    for name, fn in functions(module_tf).items():
        service = block(fn, "service_config")
        secrets = blocks(service, "secret_environment_variables")
        plain = module_tf.env_map(service.get("environment_variables", {}))
        assert names.ENV_GEMINI_API_KEY not in plain, f"{name} has the key as a plain variable"
        if name == "exec":
            assert [module_tf.resolve(s["key"]) for s in secrets] == [names.ENV_GEMINI_API_KEY]
            assert secrets[0]["secret"] == "${var.gemini_key_secret}"
        else:
            assert not secrets, f"{name} must not see the Gemini key"


def test_the_secret_is_referenced_only_by_the_secret_env_and_its_one_iam_grant(
    module_tf: TfConfig,
) -> None:
    allowed_iam = ("google_secret_manager_secret_iam_member", "exec_reads_gemini_key", "secret_id")
    for rtype, by_name in module_tf.resources.items():
        for rname, body in by_name.items():
            for path, text in walk_strings(body):
                if "var.gemini_key_secret" not in text:
                    continue
                where = (rtype, rname, *path)
                assert "secret_environment_variables" in path or where == allowed_iam, (
                    f"var.gemini_key_secret used at {'.'.join(where)}"
                )
    for section in (module_tf.locals, module_tf.outputs):
        assert not [t for _, t in walk_strings(section) if "gemini_key_secret" in t]


def test_the_key_never_enters_terraform_state(module_tf: TfConfig, root_tf: TfConfig) -> None:
    for tf in (module_tf, root_tf):
        assert "google_secret_manager_secret_version" not in tf.resources
        assert "google_secret_manager_secret_version" not in tf.data


def test_only_exec_may_read_the_secret_and_only_that_secret(module_tf: TfConfig) -> None:
    grants = module_tf.of_type("google_secret_manager_secret_iam_member")
    assert list(grants) == ["exec_reads_gemini_key"]
    grant = grants["exec_reads_gemini_key"]
    assert grant["secret_id"] == "${var.gemini_key_secret}"
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    assert grant["member"] == '${google_service_account.runtime["exec"].member}'


# --- identities and permissions -----------------------------------------------------------------


def test_no_primitive_role_is_granted_anywhere(module_tf: TfConfig, root_tf: TfConfig) -> None:
    for tf in (module_tf, root_tf):
        found = [text for _, text in walk_strings(tf.resources) if text in PRIMITIVE_ROLES]
        found += [text for _, text in walk_strings(tf.locals) if text in PRIMITIVE_ROLES]
        assert not found


def test_project_level_grants_are_limited_to_firestore_logs_telemetry_and_build_sources(
    module_tf: TfConfig,
) -> None:
    roles = {g["role"] for g in module_tf.of_type("google_project_iam_member").values()}
    assert roles == {
        "roles/datastore.user",
        "roles/logging.logWriter",
        "roles/storage.objectViewer",
        "roles/cloudtrace.agent",  # write-only: spans (agentgraph.observability)
        "roles/monitoring.metricWriter",  # write-only: metrics
    }
    assert "google_project_iam_binding" not in module_tf.resources
    assert "google_project_iam_policy" not in module_tf.resources


def test_there_is_one_service_account_per_function_role(module_tf: TfConfig) -> None:
    roles = set(module_tf.locals["runtime_accounts"])
    assert roles == {role for _, role, _ in FUNCTIONS.values()}
    accounts = module_tf.of_type("google_service_account")
    assert set(accounts) == {"runtime", "invoker", "build"}
    assert accounts["runtime"]["for_each"] == "${local.runtime_accounts}"


def test_every_runtime_role_may_write_traces_and_metrics_when_telemetry_is_on(
    module_tf: TfConfig,
) -> None:
    grants = module_tf.of_type("google_project_iam_member")
    for name, role in (("trace_agent", "roles/cloudtrace.agent"), ("metric_writer", "roles/monitoring.metricWriter")):
        assert grants[name]["role"] == role
        assert "local.runtime_accounts" in grants[name]["for_each"]
        assert "var.telemetry" in grants[name]["for_each"]


def test_every_runtime_role_may_use_firestore(module_tf: TfConfig) -> None:
    grant = module_tf.of_type("google_project_iam_member")["datastore_user"]
    assert grant["for_each"] == "${local.runtime_accounts}"
    assert grant["role"] == "roles/datastore.user"


def test_each_role_publishes_only_to_names_topics_and_nobody_publishes_requests_or_dead_letters(
    module_tf: TfConfig,
) -> None:
    publishes = {
        role: {module_tf.resolve(t) for t in topics}
        for role, topics in module_tf.locals["publishes"].items()
    }
    assert set(publishes) == set(module_tf.locals["runtime_accounts"])
    published = set().union(*publishes.values())
    assert published <= set(constants("TOPIC_").values())
    assert names.TOPIC_RUN_REQUESTS not in published
    assert names.TOPIC_DEAD_LETTER not in published
    assert names.TOPIC_NODE_READY in publishes["api"]
    assert names.TOPIC_NODE_FINISHED in publishes["exec"]
    assert names.TOPIC_NODE_READY in publishes["retry"]
    grant = module_tf.of_type("google_pubsub_topic_iam_member")["publisher"]
    assert grant["for_each"] == "${local.publish_grants}"
    assert grant["role"] == "roles/pubsub.publisher"


def test_exec_may_enqueue_retries_that_carry_the_invokers_token(module_tf: TfConfig) -> None:
    enqueue = module_tf.of_type("google_cloud_tasks_queue_iam_member")["exec_enqueues"]
    assert enqueue["role"] == "roles/cloudtasks.enqueuer"
    assert enqueue["name"] == "${google_cloud_tasks_queue.retries.name}"
    assert enqueue["member"] == '${google_service_account.runtime["exec"].member}'
    act_as = module_tf.of_type("google_service_account_iam_member")["exec_acts_as_invoker"]
    assert act_as["role"] == "roles/iam.serviceAccountUser"
    assert act_as["service_account_id"] == "${google_service_account.invoker.name}"
    assert act_as["member"] == '${google_service_account.runtime["exec"].member}'


def test_the_invoker_may_call_exactly_the_internal_functions(module_tf: TfConfig) -> None:
    grants = module_tf.of_type("google_cloud_run_service_iam_member")
    for grant in grants.values():
        assert grant["role"] == "roles/run.invoker"
    to_invoker = [
        g for g in grants.values() if g["member"] == "${google_service_account.invoker.member}"
    ]
    assert len(to_invoker) == 1
    assert to_invoker[0]["for_each"] == "${local.internal_functions}"
    assert to_invoker[0]["service"] == "${each.value.name}"
    internal = module_tf.locals["internal_functions"]
    # merge(exec, {for role, f in control : role => f if role != "<excluded>"})
    match = re.fullmatch(
        r"\$\{merge\(google_cloudfunctions2_function\.exec, \{for role, f in "
        r'google_cloudfunctions2_function\.control : role => f if role != "([a-z_]+)"\}\)\}',
        internal,
    )
    assert match, f"internal_functions is not exec and all control functions but one: {internal}"
    invokable = {"exec"} | set(module_tf.locals["control_functions"]) - {match.group(1)}
    assert invokable == {name for name in FUNCTIONS if name != "api"}


def test_only_the_allowed_invokers_may_call_the_api(module_tf: TfConfig) -> None:
    grants = module_tf.of_type("google_cloud_run_service_iam_member")
    api_grants = [g for g in grants.values() if 'control["api"].' in g.get("service", "")]
    assert len(api_grants) == 1
    assert api_grants[0]["for_each"] == "${toset(var.allowed_invokers)}"
    assert api_grants[0]["member"] == "${each.value}"
    texts = [t for _, t in walk_strings(module_tf.resources)]
    assert "allUsers" not in texts and "allAuthenticatedUsers" not in texts


# --- delivery: push, dead letters, scheduler --------------------------------------------------


@pytest.mark.parametrize("subscription", ["exec", "complete", "run_requests"])
def test_every_push_subscription_authenticates_with_the_invokers_oidc_token(
    module_tf: TfConfig, subscription: str
) -> None:
    subs = push_subscriptions(module_tf)
    assert set(subs) == {"exec", "complete", "run_requests"}
    push = block(subs[subscription], "push_config")
    token = block(push, "oidc_token")
    assert token["service_account_email"] == "${google_service_account.invoker.email}"
    assert token["audience"] == push["push_endpoint"]


@pytest.mark.parametrize("subscription", ["exec", "complete", "run_requests"])
def test_push_subscriptions_back_off_dead_letter_and_never_expire(
    module_tf: TfConfig, subscription: str
) -> None:
    sub = push_subscriptions(module_tf)[subscription]
    retry = block(sub, "retry_policy")
    assert {"minimum_backoff", "maximum_backoff"} <= retry.keys()
    dead = block(sub, "dead_letter_policy")
    assert dead["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert dead["max_delivery_attempts"] == "${var.dead_letter_max_delivery_attempts}"
    assert block(sub, "expiration_policy")["ttl"] == ""


def test_ack_deadlines_match_the_function_timeouts_capped_at_600_s(module_tf: TfConfig) -> None:
    subs = push_subscriptions(module_tf)
    assert subs["exec"]["ack_deadline_seconds"] == "${min(600, max(10, p.timeout_s))}"
    for name in ("complete", "run_requests"):
        target = referenced_function(block(subs[name], "push_config")["push_endpoint"])
        timeout = block(functions(module_tf)[target], "service_config")["timeout_seconds"]
        assert subs[name]["ack_deadline_seconds"] == min(600, timeout)


def test_the_pubsub_service_agent_may_dead_letter_every_push_subscription(
    module_tf: TfConfig,
) -> None:
    publisher = module_tf.of_type("google_pubsub_topic_iam_member")["dead_letter_publisher"]
    assert publisher["topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert publisher["member"] == "${local.pubsub_service_agent}"
    grants = module_tf.of_type("google_pubsub_subscription_iam_member")
    assert list(grants) == ["dead_letter_subscriber"]
    grant = grants["dead_letter_subscriber"]
    assert grant["role"] == "roles/pubsub.subscriber"
    assert grant["member"] == "${local.pubsub_service_agent}"
    # every instance of the one push subscription resource, so every push subscription
    assert grant["for_each"] == "${google_pubsub_subscription.push}"
    assert grant["subscription"] == "${each.value.id}"


def test_sweep_is_called_every_minute_with_the_invokers_oidc_token(module_tf: TfConfig) -> None:
    job = module_tf.of_type("google_cloud_scheduler_job")["sweep"]
    assert job["schedule"] == "${var.sweep_schedule}"
    assert module_tf.variables["sweep_schedule"]["default"] == "* * * * *"
    target = block(job, "http_target")
    assert referenced_function(target["uri"]) == "sweep"
    token = block(target, "oidc_token")
    assert token["service_account_email"] == "${google_service_account.invoker.email}"
    assert token["audience"] == target["uri"]


# --- providers, APIs, formatting ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["root", "module"])
def test_terraform_and_providers_are_pinned(
    module_tf: TfConfig, root_tf: TfConfig, where: str
) -> None:
    tf = root_tf if where == "root" else module_tf
    assert len(tf.terraform) == 1
    settings = tf.terraform[0]
    assert settings["required_version"] == ">= 1.5"
    providers = block(settings, "required_providers")
    assert providers["google"] == {"source": "hashicorp/google", "version": "~> 6.0"}
    assert providers["google-beta"] == {"source": "hashicorp/google-beta", "version": "~> 6.0"}


def test_the_apis_the_stack_uses_are_enabled(module_tf: TfConfig) -> None:
    services = module_tf.locals["services"]
    needed = {
        "cloudfunctions.googleapis.com",
        "run.googleapis.com",
        "cloudbuild.googleapis.com",
        "artifactregistry.googleapis.com",
        "pubsub.googleapis.com",
        "cloudtasks.googleapis.com",
        "cloudscheduler.googleapis.com",
        "firestore.googleapis.com",
        "firebaserules.googleapis.com",
        "secretmanager.googleapis.com",
    }
    assert all(service in services for service in needed)
    apis = module_tf.of_type("google_project_service")["apis"]
    assert apis["disable_on_destroy"] is False


def test_terraform_fmt_finds_nothing_to_change() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed, so `terraform fmt -check` cannot run")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"run `terraform fmt -recursive infra`:\n{result.stdout}"
