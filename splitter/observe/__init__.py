"""Observing a running splitter: lag, health, `/metrics` and `/healthz` of a capture or worker process.

`metrics` (start_metrics, ComponentMetrics) puts together `lag` (the lag definitions `splitter status` shares),
`health` (/healthz state), `poller` (background reads through connectors), `collectors` (every metric name) and
`http` (the endpoint).  Nothing here changes the pipeline: it only looks; the pipeline never imports it.
"""
