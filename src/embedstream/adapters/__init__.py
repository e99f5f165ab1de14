"""Adapters to the outside world: Redis scripts, the embedder, Chroma, PostgreSQL."""
