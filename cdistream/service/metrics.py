"""Health and metrics for Prometheus (``cdistream serve --metrics ADDRESS``): the counts are
read from the service's own accounting at every scrape (one source of truth, so the metrics
always equal the stop documents), plus histograms of batch size and latency, queue depth and
bytes, which threads are alive and when the last frame arrived."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .accounting import Accounting

__all__ = ["ServiceMetrics", "parse_address"]

log = logging.getLogger(__name__)


def parse_address(address: str) -> tuple[str, int]:
    """'9102', ':9102', 'host:9102' -> (host, port); the host defaults to localhost."""
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class _Counts:
    """A collector that turns the accounting into counters at scrape time."""

    def __init__(self, accounting: Accounting, gauges: Callable[[], dict[str, float]]):
        self._acct, self._gauges = accounting, gauges

    def collect(self):
        c = self._acct.snapshot()
        for name, value, doc in (
            ("frames_received", c["received"], "frames received from the detector"),
            ("frames_reconstructed", c["reconstructed"], "frames reconstructed and published"),
            ("frames_dropped", c["dropped"], "frames dropped under overload (oldest first)"),
            ("documents_not_delivered", c["documents_not_delivered"],
             "feedback documents a subscriber's full buffer could not take"),
        ):
            yield CounterMetricFamily(f"cdistream_{name}", doc, value=value)
        rejected = CounterMetricFamily(
            "cdistream_frames_rejected", "frames rejected, by reason", labels=["reason"]
        )
        for reason, n in c["rejected"].items():
            rejected.add_metric([reason], n)
        yield rejected
        missing = CounterMetricFamily(
            "cdistream_frames_missing", "numbered or announced frames that never arrived",
            labels=["where"],
        )
        missing.add_metric(["gap"], c["gaps"])
        missing.add_metric(["before_first"], c["missing_before_first"])
        missing.add_metric(["after_last"], c["missing_after_last"])
        yield missing
        notices = CounterMetricFamily(
            "cdistream_notices", "things that went wrong without costing a frame", labels=["name"]
        )
        for name, n in c["notices"].items():
            notices.add_metric([name], n)
        yield notices
        for name, value in self._gauges().items():
            yield GaugeMetricFamily(f"cdistream_{name}", name.replace("_", " "), value=value)


class ServiceMetrics:
    """One registry per service (tests run several); :meth:`serve` exposes it over HTTP."""

    def __init__(self, accounting: Accounting, gauges: Callable[[], dict[str, float]]):
        self.registry = CollectorRegistry()
        self.registry.register(_Counts(accounting, gauges))
        self.batch_size = Histogram(
            "cdistream_batch_size", "frames per network batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "cdistream_batch_seconds", "time to reconstruct and publish one batch",
            buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3), registry=self.registry,
        )
        self.latency = Histogram(
            "cdistream_frame_latency_seconds", "detector timestamp to publication",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.last_frame = Gauge(
            "cdistream_last_frame_timestamp_seconds", "detector timestamp of the newest frame",
            registry=self.registry,
        )
        self._server = None

    def serve(self, address: str) -> str:
        """Start the HTTP endpoint; returns host:port actually bound."""
        host, port = parse_address(address)
        self._server, _thread = start_http_server(port, host, self.registry)
        bound = f"{host}:{self._server.server_port}"
        log.info("metrics on http://%s/metrics", bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
