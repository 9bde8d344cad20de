"""The web console's deployment: Firebase Hosting and Auth in Terraform, and the /api
prefix that Hosting, the emulator's console server and the api agree on."""

from __future__ import annotations

import re

from agentgraph.api.routes import CONSOLE_PREFIX
from emulator.console import API_PREFIX

from .tfconfig import INFRA, TfConfig


def test_the_console_gets_a_firebase_project_web_app_and_hosting_site(
    module_tf: TfConfig,
) -> None:
    assert "console" in module_tf.of_type("google_firebase_project")
    app = module_tf.of_type("google_firebase_web_app")["console"]
    site = module_tf.of_type("google_firebase_hosting_site")["console"]
    assert site["app_id"] == "${google_firebase_web_app.console.app_id}"
    assert "google-beta" in str(site["provider"])
    assert "google-beta" in str(app["provider"])
    services = module_tf.locals["services"]
    for api in (
        "firebase.googleapis.com",
        "firebasehosting.googleapis.com",
        "identitytoolkit.googleapis.com",
    ):
        assert api in services


def test_the_console_is_published_with_its_config_and_the_api_behind_the_same_prefix() -> None:
    script = (INFRA / "hosting.sh").read_text()
    rewrite = re.search(r'"source": "([^"]+)", "run": \{ "serviceId": "([^"]+)"', script)
    assert rewrite is not None
    assert rewrite.group(1) == CONSOLE_PREFIX + "/**"
    assert rewrite.group(2) == "api"
    assert f'"apiUrl": "{CONSOLE_PREFIX}"' in script
    assert API_PREFIX == CONSOLE_PREFIX
    assert "hosting.sh" in (INFRA / "deploy.sh").read_text()
