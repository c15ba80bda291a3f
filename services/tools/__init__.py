"""Tools for operators, outside the product services: the `roac import` client
(`bulk_import.py` does the work, `import_cli.py` shows it). A tool talks to a service only over its
public HTTP API and may import `shared/` (the event models it validates against), never a
service's modules; no service imports a tool (tests/unit/test_architecture.py)."""
