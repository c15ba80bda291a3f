"""Ingest: the HTTP API integrations push people and interests into."""
