"""The service's telemetry (Prometheus text at /metrics): request counts, latencies, errors, in flight."""

from __future__ import annotations

import threading
from collections import defaultdict


def _label(value: object) -> str:
    """A Prometheus label value, escaped (backslash, quote, newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    """Thread-safe counters and latency histograms per route, rendered in Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.images: dict[str, int] = defaultdict(int)
        self.hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        with self._lock:
            self.requests[(method, route, status)] += 1
            counts = self.hist[route]
            for k, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    counts[k] += 1
            counts[-1] += 1  # +Inf
            self.sums[route] += seconds

    def error(self, route: str, code: str) -> None:
        """Count one error response by its error code (not_an_image, too_large, ...)."""
        with self._lock:
            self.errors[(route, code)] += 1

    def scored(self, outcome: str, n: int = 1) -> None:
        """Count images scored (``ok``) or refused (``error``)."""
        with self._lock:
            self.images[outcome] += n

    def render(self, in_flight: int, engine: str) -> str:
        """The /metrics page (text/plain; version=0.0.4)."""
        with self._lock:
            lines = [
                "# HELP cxr_requests_total HTTP requests by method, route and status.",
                "# TYPE cxr_requests_total counter",
            ]
            for (m, r, s), v in sorted(self.requests.items()):
                lines.append(
                    f'cxr_requests_total{{method="{_label(m)}",route="{_label(r)}",status="{s}"}} {v}'
                )
            lines += [
                "# HELP cxr_errors_total Error responses by route and code.",
                "# TYPE cxr_errors_total counter",
            ]
            for (r, c), v in sorted(self.errors.items()):
                lines.append(f'cxr_errors_total{{route="{_label(r)}",code="{_label(c)}"}} {v}')
            lines += [
                "# HELP cxr_images_total Uploaded images scored or refused.",
                "# TYPE cxr_images_total counter",
            ]
            for o, v in sorted(self.images.items()):
                lines.append(f'cxr_images_total{{outcome="{o}"}} {v}')
            lines += [
                "# HELP cxr_request_seconds Request latency by route.",
                "# TYPE cxr_request_seconds histogram",
            ]
            for r, counts in sorted(self.hist.items()):
                for edge, c in zip(BUCKETS, counts, strict=False):
                    lines.append(f'cxr_request_seconds_bucket{{route="{_label(r)}",le="{edge}"}} {c}')
                lines.append(f'cxr_request_seconds_bucket{{route="{_label(r)}",le="+Inf"}} {counts[-1]}')
                lines.append(f'cxr_request_seconds_sum{{route="{_label(r)}"}} {self.sums[r]:.6f}')
                lines.append(f'cxr_request_seconds_count{{route="{_label(r)}"}} {counts[-1]}')
            lines += [
                "# HELP cxr_in_flight Requests waiting for or running inference.",
                "# TYPE cxr_in_flight gauge",
                f"cxr_in_flight {in_flight}",
                "# HELP cxr_engine_info The inference engine in use.",
                "# TYPE cxr_engine_info gauge",
                f'cxr_engine_info{{engine="{engine}"}} 1',
            ]
        return "\n".join(lines) + "\n"
