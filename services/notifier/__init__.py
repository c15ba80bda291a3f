"""Notifier: delivers introductions by email, exactly once per participant."""
