"""The lock files: deploys and `make test` install the same hash-checked versions of
everything pyproject.toml asks for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)")


def pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    found: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        pin = _PIN.match(line)
        if pin:
            current = canonicalize_name(pin.group(1))
            found[current] = (pin.group(2), 0)
        elif current and "--hash=sha256:" in line:
            version, hashes = found[current]
            found[current] = (version, hashes + 1)
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_functions_lock_pins_every_runtime_dependency_with_hashes() -> None:
    locked = pins(ROOT / "requirements" / "functions.txt")
    wanted = [
        Requirement(r)
        for r in project()["dependencies"] + project()["optional-dependencies"]["gcp"]
    ]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/functions.txt: run `make lock`"
        version, hashes = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (name, version)
        assert hashes >= 1, f"{name} has no hash"
    assert all(hashes >= 1 for _, hashes in locked.values())


def test_make_test_installs_the_same_versions_the_functions_deploy() -> None:
    functions = pins(ROOT / "requirements" / "functions.txt")
    dev = pins(ROOT / "requirements" / "dev.txt")
    differ = {
        n: (v, dev.get(n, ("absent",))[0])
        for n, (v, _) in functions.items()
        if dev.get(n, ("",))[0] != v
    }
    assert differ == {}, f"functions vs dev lock: {differ}; run `make lock`"


def test_the_function_archive_gets_the_functions_lock_as_its_requirements() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "cp $(LOCK_FUNCTIONS) build/function-source/requirements.txt" in makefile
    assert "--require-hashes -r $(LOCK_DEV)" in makefile
