"""Around one API request: the request counter and duration, the one log line and the span,
all filled from the same `RequestRecord`, on every outcome (answer, error, cancellation)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from llmgate_sidecar.observability import logs, tracing
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.observability.record import RequestRecord


@contextmanager
def observed(metrics: Metrics, record: RequestRecord,
             headers: Mapping[str, str]) -> Iterator[RequestRecord]:
    """Around one API request: metrics, the one log line and the span, on every outcome."""
    with tracing.request_span(headers) as span:
        try:
            yield record
        except BaseException as exc:
            if record.status == 500 and record.error is None:  # raised before answering
                record.failed(exc)
            raise
        finally:
            elapsed = time.perf_counter() - record.started
            metrics.finish(record, elapsed)
            logs.log_request(record, elapsed)
            tracing.annotate(span, record)
