"""Prometheus metrics of the service: requests, latency, batch sizes, queue depth."""

from __future__ import annotations


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llavaguard_requests", "HTTP requests by route and status.", ["route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "llavaguard_request_seconds", "Request latency by route.", ["route"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "llavaguard_batch_size", "Requests per engine batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "llavaguard_batch_seconds", "Time the engine spends on a batch.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "llavaguard_queue_depth", "Requests waiting for the model.", registry=self.registry
        )
        self.image_memory = Gauge(
            "llavaguard_image_memory_bytes", "Decoded image memory reserved by requests.",
            registry=self.registry,
        )  # fmt: skip

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
