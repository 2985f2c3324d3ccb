"""Response headers: `x-request-id`, `fireworks-sampling-options` and one `fireworks-<metric>`
per perf metric (the body's `perf_metrics` keys with the prefix)."""

from __future__ import annotations

import orjson

from firebox.serving.generation.run import ServeMeta

REQUEST_ID = "x-request-id"
SAMPLING_OPTIONS = "fireworks-sampling-options"


def _header_value(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def serve_headers(meta: ServeMeta) -> dict[str, str]:
    headers = {REQUEST_ID: meta.request_id, SAMPLING_OPTIONS: orjson.dumps(meta.sampling_options).decode()}
    for name, value in meta.perf_metrics.items():
        headers[f"fireworks-{name}"] = _header_value(value)
    return headers
