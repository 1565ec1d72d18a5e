"""Prometheus metrics of the HTTP adapter, in a registry owned by the app (not the global one).

Other parts of the bridge register their own collectors into the same registry by passing it
to :func:`bridge.adapters.http.app.create_app` as ``metrics_registry``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True, slots=True)
class HttpMetrics:
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> HttpMetrics:
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter(
                "bridge_http_requests",
                "HTTP requests answered, by method, route template and status code.",
                ["method", "route", "status"],
                registry=registry,
            ),
            duration=Histogram(
                "bridge_http_request_duration_seconds",
                "Time to answer an HTTP request, by method and route template.",
                ["method", "route"],
                registry=registry,
            ),
        )
