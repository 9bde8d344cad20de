"""The pure core: the graph format, validation, templates, the rules of a run, the
ports and the values that cross them, messages, errors and every cloud name.

Nothing here does I/O or imports an adapter (backends, functions, google-*, rich,
tenacity): `make test` holds that with an import-linter contract (`.importlinter`).
"""
