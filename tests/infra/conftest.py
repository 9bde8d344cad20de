"""Fixtures: the parsed Terraform of the example root (infra/) and of the module."""

from __future__ import annotations

import pytest

from .tfconfig import INFRA, MODULE, TfConfig


@pytest.fixture(scope="session")
def module_tf() -> TfConfig:
    return TfConfig.load(MODULE)


@pytest.fixture(scope="session")
def root_tf() -> TfConfig:
    return TfConfig.load(INFRA)
