"""Exceptions with a meaning for the consumer policy (shared/consumer.py)."""


class TransientError(RuntimeError):
    """Something outside roac failed in a way that may pass: retry the message later."""
