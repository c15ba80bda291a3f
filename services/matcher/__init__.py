"""Matcher: keeps people and interests, proposes introductions."""
