"""The Redis Streams consumer runtime: names, messages, consumer operations, run loop."""
