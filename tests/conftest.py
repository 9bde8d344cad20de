"""Shared pytest setup for every test: the emulator fixtures (tests/emulators.py) and the
Gemini stub's (tests/gemini_stub_fixtures.py)."""

pytest_plugins = ["tests.emulators", "tests.gemini_stub_fixtures"]
