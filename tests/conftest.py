"""Shared pytest setup: the emulator fixtures (tests/emulators.py) for every test."""

pytest_plugins = ["tests.emulators"]
