"""The OTLP/HTTP span exporter: OpenTelemetry's, with the span encoding of ``otlp_encoding``.

Everything but the encoding stays the library's: endpoint, headers, TLS, compression, timeout,
retries with backoff. The library's exporter has no hook for its encoder, so ``export`` hands our
bytes to the exporter's HTTP client itself; when that client is not the one this was written
against (another library version), or a batch holds a value our encoder refuses, the library's
own ``export`` runs instead: slower, never wrong. So does it when the SDK's own exporter metrics
are switched on (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``), which only that path records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.environment_variables import OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from service.observability.otlp_encoding import UnencodableValueError, encode_spans

log = logging.getLogger(__name__)

try:
    from opentelemetry.exporter.otlp.common.http import _OTLPHTTPClient
except ImportError:  # an exporter release without the shared HTTP client
    _OTLPHTTPClient = None  # type: ignore[assignment,misc]


class FastEncodingSpanExporter(OTLPSpanExporter):
    """:class:`OTLPSpanExporter` with a faster encoder (see ``otlp_encoding``)."""

    @property
    def encodes_fast(self) -> bool:
        """Whether ``export`` uses Storefront's encoder (else the library's whole ``export``)."""
        client = getattr(self, "_client", None)
        if _OTLPHTTPClient is None or not isinstance(client, _OTLPHTTPClient):
            return False
        internal_metrics = os.environ.get(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED, "")
        return internal_metrics.strip().lower() != "true"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.encodes_fast or getattr(self, "_shutdown", False):
            return super().export(spans)
        try:
            data = encode_spans(spans)
        except (UnencodableValueError, UnicodeEncodeError) as error:
            # The library's encoder drops just the offending attribute, with a log line.
            log.debug("span batch left to the reference encoder: %s", error)
            return super().export(spans)
        result = self._client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
