"""In-memory OpenTelemetry for tests: the SDK's in-memory span exporter, metric reader and log exporter.

The OpenTelemetry API accepts one tracer, meter and logger provider per process, and the MCP SDK's tracer binds to
the first one for good. So these providers are installed once (through `install_telemetry`, the production path) and
stay; each test switches the capture on, gets only its own spans, logs and metric deltas, and switches it off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ai_credit_usage.runtime.telemetry import Telemetry, install_telemetry

GAUGES = frozenset({"ai_credits.download_store.entries", "ai_credits.download_store.size"})


class _SwitchedSpans(SpanProcessor):
    def __init__(self, inner: SpanProcessor) -> None:
        self.inner, self.on = inner, False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on:
            self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _SwitchedLogs(LogRecordProcessor):
    def __init__(self, inner: LogRecordProcessor) -> None:
        self.inner, self.on = inner, False

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self.on:
            self.inner.on_emit(log_record)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass(frozen=True)
class Point:
    """One metric data point: a counter's or gauge's value, or a histogram's count and sum."""

    value: float
    count: int = 0


class Captured:
    def __init__(self, spans: list[ReadableSpan], logs: list[ReadableLogRecord], points: dict[tuple, Point]) -> None:
        self.spans, self.logs, self.points = spans, logs, points

    def span(self, name: str) -> ReadableSpan:
        found = self.spans_named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans]}"
        return found[0]

    def spans_named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == prefix or span.name.startswith(prefix + " ")]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans if s.parent is not None and s.parent.span_id == parent.context.span_id]

    def metric(self, name: str, **attributes: Any) -> list[Point]:
        """The points of metric `name` whose attributes include these (dots in keys written as `__`)."""
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        return [
            point
            for (metric, attrs), point in self.points.items()
            if metric == name and all(dict(attrs).get(key) == value for key, value in wanted.items())
        ]


class TelemetryCapture:
    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.log_exporter = InMemoryLogRecordExporter()
        # Delta temporality: every collection holds only what happened since the last one, i.e. in this test.
        delta = AggregationTemporality.DELTA
        self.reader = InMemoryMetricReader(preferred_temporality={Counter: delta, Histogram: delta})
        self._spans = _SwitchedSpans(SimpleSpanProcessor(self.span_exporter))
        self._logs = _SwitchedLogs(SimpleLogRecordProcessor(self.log_exporter))
        resource = Resource.create({"service.name": "ai-credits-mcp-tests"})
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(self._spans)
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(self._logs)
        meter_provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        self.telemetry: Telemetry = install_telemetry(tracer_provider, meter_provider, logger_provider)
        # The log handler goes on the root logger only while a capture runs.
        logging.getLogger().removeHandler(self.telemetry.log_handler)

    @contextmanager
    def capture(self) -> Iterator[Captured]:
        """Spans, logs and metric deltas from inside the block; filled in when the block ends."""
        self.span_exporter.clear()
        self.log_exporter.clear()
        self.reader.get_metrics_data()  # start the deltas here
        captured = Captured([], [], {})
        root = logging.getLogger()
        root.addHandler(self.telemetry.log_handler)
        self._spans.on = self._logs.on = True
        try:
            yield captured
        finally:
            self._spans.on = self._logs.on = False
            root.removeHandler(self.telemetry.log_handler)
        captured.spans = list(self.span_exporter.get_finished_spans())
        captured.logs = list(self.log_exporter.get_finished_logs())
        self.collect(captured)

    def collect(self, captured: Captured) -> dict[tuple, Point]:
        """Collect now: returns this collection's points (gauges as they are now) and adds them to `captured`."""
        points = self._points()
        for key, point in points.items():
            before = captured.points.get(key)
            if before is not None and point.count == 0 and key[0] not in GAUGES:  # a counter's delta
                point = Point(before.value + point.value)
            elif before is not None and key[0] not in GAUGES:  # a histogram's delta
                point = Point(before.value + point.value, before.count + point.count)
            captured.points[key] = point
        return points

    def _points(self) -> dict[tuple, Point]:
        points: dict[tuple, Point] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else []:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, tuple(sorted((point.attributes or {}).items())))
                        if hasattr(point, "count"):  # a histogram
                            points[key] = Point(point.sum, point.count)
                        else:
                            points[key] = Point(point.value)
        return points


_installed: TelemetryCapture | None = None


def telemetry_capture() -> TelemetryCapture:
    """The process's one capture, installed on first use."""
    global _installed
    if _installed is None:
        _installed = TelemetryCapture()
    return _installed
