"""The official Firestore and Pub/Sub emulators (Java) from the Google Cloud CLI.

Both are started through their launchers inside the SDK (`platform/cloud-firestore-emulator`,
`platform/pubsub-emulator`), exactly as `gcloud beta emulators ... start` would, minus the
~2 s that gcloud itself takes to start; pass `use_gcloud=True` to go through gcloud instead.
A missing `gcloud`, emulator component or `java` raises `EmulatorNotInstalled` naming the
package to install, before anything is started. Ready means: `GET /` answers "Ok" AND the
log says this process listens on our port (another server may have won the port).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from emulator.processes import (
    DEFAULT_PROJECT,
    LOOPBACK,
    EmulatorError,
    EmulatorNotInstalled,
    Server,
)

_INSTALL_GCLOUD = (
    "apt-get install google-cloud-cli google-cloud-cli-firestore-emulator "
    "google-cloud-cli-pubsub-emulator (from Google's apt repository)"
)
_INSTALL_JAVA = (
    "apt-get install openjdk-17-jre-headless (the Firestore emulator after gcloud 528 "
    "wants Java 21 or newer)"
)


def _require_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") or (java_home and (Path(java_home) / "bin" / "java").exists()):
        return
    raise EmulatorNotInstalled(
        f"The Firestore and Pub/Sub emulators run on Java, but `java` is not on PATH. "
        f"Install a JRE: {_INSTALL_JAVA}."
    )


def _sdk_root() -> Path:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorNotInstalled(
            "`gcloud` is not on PATH; the Firestore and Pub/Sub emulators come with the "
            f"Google Cloud CLI. Install it: {_INSTALL_GCLOUD}."
        )
    return Path(os.path.realpath(gcloud)).parent.parent


class _JavaEmulator(Server):
    _component = ""  # folder under <sdk>/platform
    _apt_package = ""
    _gcloud_component = ""

    def __init__(
        self,
        project: str = DEFAULT_PROJECT,
        port: int = 0,
        *,
        log_dir: Path | str | None = None,
        use_gcloud: bool = False,
    ) -> None:
        super().__init__(port, log_dir=log_dir)
        self.project = project
        self.use_gcloud = use_gcloud
        self._launcher: Path | None = None

    def _check_installed(self) -> None:
        root = _sdk_root()
        _require_java()
        component = root / "platform" / self._component
        if component.is_dir():
            launchers = [p for p in component.rglob("*") if p.name == self._launcher_name()]
            self._launcher = launchers[0] if launchers else None
        elif (root / "lib" / "gcloud.py").exists():
            raise EmulatorNotInstalled(
                f"The {self.name} emulator is not installed in the Google Cloud CLI at "
                f"{root}. Install it: apt-get install {self._apt_package} (or "
                f"`gcloud components install {self._gcloud_component}` when the CLI was "
                "not installed by apt)."
            )
        # Otherwise an unusual layout: let gcloud find (or explain the lack of) it.

    def _launcher_name(self) -> str:
        raise NotImplementedError

    def _answers(self) -> bool:
        # "Ok" on GET / could come from another server that won the port; the log line
        # says that this process is the one listening.
        got = self._http_get("/")
        if got is None or got[0] != 200:
            return False
        proc = self._proc
        return proc is not None and self._ready_line(self.port) in proc.log_text()

    def _ready_line(self, port: int) -> str:
        raise NotImplementedError


class FirestoreEmulator(_JavaEmulator):
    """The official Firestore emulator (native mode)."""

    name = "Firestore"
    _component = "cloud-firestore-emulator"
    _apt_package = "google-cloud-cli-firestore-emulator"
    _gcloud_component = "cloud-firestore-emulator"

    def _launcher_name(self) -> str:
        return "cloud_firestore_emulator"

    def _ready_line(self, port: int) -> str:
        return f"API endpoint: http://{LOOPBACK}:{port}"

    def _argv(self, port: int) -> list[str]:
        if self._launcher is not None and not self.use_gcloud:
            return [
                str(self._launcher),
                "start",
                f"--host={LOOPBACK}",
                f"--port={port}",
                "--database-mode=firestore-native",
            ]
        return ["gcloud", "beta", "emulators", "firestore", "start", f"--host-port={self.host}"]

    def reset(self, project: str | None = None, database: str = "(default)") -> None:
        """Delete every document of the database (fast; the emulator keeps running)."""
        url = (
            f"http://{self.host}/emulator/v1/projects/{project or self.project}"
            f"/databases/{database}/documents"
        )
        request = urllib.request.Request(url, method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise EmulatorError(f"Firestore reset answered {resp.status} for {url}")


class PubSubEmulator(_JavaEmulator):
    """The official Pub/Sub emulator (pull and push subscriptions, filters)."""

    name = "Pub/Sub"
    _component = "pubsub-emulator"
    _apt_package = "google-cloud-cli-pubsub-emulator"
    _gcloud_component = "pubsub-emulator"

    def _launcher_name(self) -> str:
        return "cloud-pubsub-emulator"

    def _ready_line(self, port: int) -> str:
        return f"Server started, listening on {port}"

    def _argv(self, port: int) -> list[str]:
        if self._launcher is not None and not self.use_gcloud:
            return [str(self._launcher), f"--host={LOOPBACK}", f"--port={port}"]
        return [
            "gcloud",
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={self.host}",
            f"--project={self.project}",
        ]
