"""Adapters to the outside world: the Redis client, the embedder, Chroma, PostgreSQL."""
