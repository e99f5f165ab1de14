"""Settings of what a process exposes about itself: Prometheus metrics."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from embedstream.config.env import settings_config


class MetricsSettings(BaseSettings):
    """Prometheus metrics (``embedstream.metrics``)."""

    model_config = settings_config()

    metrics: bool = Field(
        default=True,
        description="count what the process does for Prometheus (EMBEDSTREAM_METRICS): the "
        "API's GET /metrics, the workers' /metrics on their health endpoint; off: no "
        "endpoint and no counting",
    )
    metrics_queues: bool = Field(
        default=True,
        description="the API's /metrics also reports the queue gauges read from Redis "
        "(EMBEDSTREAM_METRICS_QUEUES): length, lag, pending, oldest pending age, consumers, "
        "dead letters; with several API replicas, turn it off and run one `embedstream "
        "exporter` instead",
    )
    metrics_cache_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="one reading of the queues serves every scrape for this long "
        "(EMBEDSTREAM_METRICS_CACHE_S)",
    )
