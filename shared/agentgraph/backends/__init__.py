"""Backends: `local` (embedded, SQLite) and `gcp` (Firestore, Pub/Sub, Cloud Tasks)."""
