"""roac's services: ingest, matcher and notifier, plus the `roac` command line."""
