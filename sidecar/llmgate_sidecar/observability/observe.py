"""Around one API request: the request counter and duration, the one log line and the span,
all filled from the same `RequestRecord`, on every outcome (answer, error, cancellation)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from llmgate_sidecar.observability import logs, tracing
from llmgate_sidecar.observability.metrics import Metrics
from llmgate_sidecar.observability.record import RequestRecord


class observed:  # lower case: used as `with observed(...) as record`, like a function
    """Around one API request: metrics, the one log line and the span, on every outcome.

    A plain class rather than a generator-based context manager: it runs on every request
    (the span's own context manager is entered only when tracing is on)."""

    __slots__ = ("_metrics", "_record", "_span", "_span_cm")

    def __init__(self, metrics: Metrics, record: RequestRecord,
                 headers: Mapping[str, str]) -> None:
        self._metrics, self._record = metrics, record
        self._span_cm: AbstractContextManager[Any] | None = (
            tracing.request_span(headers) if tracing.enabled() else None)
        self._span: Any = None

    def __enter__(self) -> RequestRecord:
        if self._span_cm is not None:
            self._span = self._span_cm.__enter__()
        return self._record

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        record = self._record
        try:
            if exc is not None and record.status == 500 and record.error is None:
                record.failed(exc)  # raised before answering
            elapsed = time.perf_counter() - record.started
            self._metrics.finish(record, elapsed)
            logs.log_request(record, elapsed)
            tracing.annotate(self._span, record)
        finally:
            if self._span_cm is not None:
                self._span_cm.__exit__(kind, exc, traceback)
