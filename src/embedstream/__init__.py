"""embedstream: an event-driven embedding pipeline on Redis Streams."""

__version__ = "0.1.0"
