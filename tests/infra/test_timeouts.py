"""The Terraform's function timeouts and ack deadlines are the ones the code validates
node timeouts against (agentgraph.core.timeouts is the one source of truth)."""

from __future__ import annotations

import re

from agentgraph.core import names, timeouts

from .test_terraform import push_subscriptions
from .tfconfig import TfConfig


def test_the_default_pool_deploys_the_function_timeout_the_code_assumes(
    module_tf: TfConfig, root_tf: TfConfig
) -> None:
    for tf in (module_tf, root_tf):
        pools = tf.variables["pools"]["default"]
        assert pools[names.DEFAULT_POOL]["timeout_s"] == timeouts.EXEC_TIMEOUT_S


def test_each_pool_s_ack_deadline_is_the_formula_the_code_validates_with(
    module_tf: TfConfig,
) -> None:
    expression = push_subscriptions(module_tf)["exec"]["ack_deadline_seconds"]
    formula = re.fullmatch(r"\$\{min\((\d+), max\((\d+), p\.timeout_s\)\)\}", expression)
    assert formula, expression
    assert int(formula.group(1)) == timeouts.ACK_DEADLINE_MAX_S
    assert int(formula.group(2)) == timeouts.ACK_DEADLINE_MIN_S


def test_every_function_learns_each_pool_s_timeout_from_var_pools(module_tf: TfConfig) -> None:
    env = module_tf.env_map("${local.common_env}")
    assert env[names.ENV_POOL_TIMEOUTS] == (
        '${join(",", [for pool, p in var.pools : "${pool}=${p.timeout_s}"])}'
    )


def test_a_pool_deployed_with_the_shortest_timeout_terraform_allows_still_runs_30_s_nodes(
    module_tf: TfConfig,
) -> None:
    rule = next(
        v["condition"]
        for v in module_tf.variables["pools"]["validation"]
        if "timeout_s >=" in v["condition"]
    )
    found = re.search(r"timeout_s >= (\d+) && p\.timeout_s <= (\d+)", rule)
    assert found, rule
    assert timeouts.max_node_timeout_s(int(found.group(1))) >= 30
    assert int(found.group(2)) == timeouts.LOCAL_MAX_TIMEOUT_S  # gen2 HTTP functions' maximum
