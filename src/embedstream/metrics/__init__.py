"""Prometheus metrics (prometheus-client; no hand-written exposition).

- ``embedstream.metrics.runtime``: what the stream runtime counts in every worker and
  subscriber (messages by outcome, reclaims, lease renewals, batch sizes and durations,
  batches in flight) and the stores' write latency; served by each worker's health
  endpoint at ``/metrics``.
- ``embedstream.metrics.embedder``: the embed stage's encoder (chunks, tokens, padded
  tokens, encode seconds), read from the model's own counters at scrape time.
- ``embedstream.metrics.http``: the ingress (requests by route template, method and
  status, latency, documents and bytes accepted) and its ``GET /metrics``.
- ``embedstream.metrics.queues``: the queue gauges (length, lag, pending, oldest pending
  age, consumers, dead letters), read from Redis at scrape time in ONE place: the API's
  ``/metrics`` or ``embedstream exporter`` (``embedstream.metrics.exporter``).

Names follow ``embedstream_<what>_<unit>`` (``_total`` for counters, ``_seconds`` for
durations); labels come from small fixed sets only (stage, group, stream, outcome,
route, method, status, store, model), never a tenant, a document or a job id.
"""
