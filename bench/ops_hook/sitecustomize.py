"""Imported at start-up by the bench's function processes (bench/ops_log.py says why)."""

import os

if os.environ.get("AGENTGRAPH_BENCH_OPS_LOG"):
    from bench.ops_log import install

    install(os.environ["AGENTGRAPH_BENCH_OPS_LOG"])
