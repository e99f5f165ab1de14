"""The HTTP ingress (FastAPI)."""
