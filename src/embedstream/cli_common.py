"""What every ``embedstream`` command starts from: the settings, with logging
configured, and the console its tables go to."""

from __future__ import annotations

import os
import sys

from rich.console import Console

from embedstream.config import Settings
from embedstream.logging import configure_logging

console = Console() if sys.stdout.isatty() else Console(width=140)


def cli_settings() -> Settings:
    """The settings (from the environment), with logging configured: every command's
    first step."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    settings = Settings()
    configure_logging(settings.app.log_level, json=settings.app.json_logs)
    return settings
