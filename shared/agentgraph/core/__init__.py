"""The pure core: the graph format, validation, templates, the rules of a run (readiness,
the node and run state machine in `transitions`), the ports and the values that cross
them, messages, errors, every cloud name, and a bounded cache (`lru`).

Nothing here does I/O or imports an adapter (backends, functions, google-*, rich,
tenacity): `make test` holds that with an import-linter contract (`.importlinter`).
"""
