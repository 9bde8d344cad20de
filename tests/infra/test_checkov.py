"""Checkov finds nothing in infra/ beyond the findings accepted, with a reason each, in
infra/checkov-accepted.yaml; and every accepted finding still occurs (no stale acceptances).

Checkov pins an older `packaging` than pytest needs, so it lives in its own virtual
environment: CHECKOV=/path/to/checkov, else .venv-checkov/bin/checkov, else checkov on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .tfconfig import INFRA, REPO

ACCEPTED_FILE = INFRA / "checkov-accepted.yaml"
INSTALL_HINT = (
    "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30 "
    "(or set CHECKOV to a checkov executable)"
)


def accepted_findings() -> list[dict[str, Any]]:
    return yaml.safe_load(ACCEPTED_FILE.read_text())["accepted"]


def checkov_executable() -> str | None:
    candidates = [os.environ.get("CHECKOV"), str(REPO / ".venv-checkov" / "bin" / "checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("checkov")


def short_resource(resource: str) -> str:
    """module.agentgraph.google_x.name["key"] -> google_x.name"""
    resource = re.sub(r"\[[^\]]*\]", "", resource)
    return re.sub(r"^(module\.[^.]+\.)+", "", resource)


@pytest.fixture(scope="module")
def failed_checks() -> set[tuple[str, str]]:
    checkov = checkov_executable()
    if checkov is None:
        pytest.skip(f"checkov is not installed: {INSTALL_HINT}")
    result = subprocess.run(
        [
            checkov,
            "--directory",
            str(INFRA),
            "--framework",
            "terraform",
            "--quiet",
            "--compact",
            "--output",
            "json",
            "--skip-download",  # no network here; the checks ship with checkov
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "LOG_LEVEL": "ERROR"},
    )
    assert result.returncode in (0, 1), f"checkov failed to run:\n{result.stderr[-4000:]}"
    if not result.stdout.strip():
        return set()
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = set()
    for report in reports:
        assert report["summary"].get("parsing_errors", 0) == 0, "checkov could not parse infra/"
        for check in report.get("results", {}).get("failed_checks", []):
            failed.add((check["check_id"], short_resource(check["resource"])))
    return failed


def test_every_accepted_finding_names_its_check_resources_and_reason() -> None:
    for entry in accepted_findings():
        assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", entry["check"]), entry
        assert entry["resources"], f"{entry['check']} accepts no resource"
        assert len(entry.get("why", "")) >= 80, f"{entry['check']} needs a real justification"


def test_checkov_finds_nothing_outside_the_accepted_list(
    failed_checks: set[tuple[str, str]],
) -> None:
    accepted = {(e["check"], r) for e in accepted_findings() for r in e["resources"]}
    unexpected = sorted(failed_checks - accepted)
    assert not unexpected, (
        f"checkov failed checks that are not accepted: {unexpected}. Fix them, or add them to "
        f"{ACCEPTED_FILE.relative_to(REPO)} with the reason they are acceptable."
    )


def test_every_accepted_finding_still_occurs(failed_checks: set[tuple[str, str]]) -> None:
    accepted = {(e["check"], r) for e in accepted_findings() for r in e["resources"]}
    stale = sorted(accepted - failed_checks)
    assert not stale, f"remove these from {ACCEPTED_FILE.relative_to(REPO)}, they pass now: {stale}"
