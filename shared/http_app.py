"""The one way roac makes a FastAPI app.

FastAPI 0.16x instruments every request for OpenTelemetry unless told not to, and even with no
OpenTelemetry provider configured it asks whether one is, per request, through os.environ: 17 %
of ingest's CPU under load (py-spy, `python -m bench.ingest_throughput`). roac's telemetry is its
Prometheus `/metrics`; an operator who wants traces wraps the app in OpenTelemetry's own ASGI
middleware."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

# What FastAPI's built-in telemetry is told: all of it off.
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def http_app(**options: Any) -> FastAPI:
    """A FastAPI app with `options` (title, lifespan, docs_url ...) and no built-in telemetry."""
    return FastAPI(telemetry=TELEMETRY_OFF, **options)
