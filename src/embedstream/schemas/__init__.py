"""Message and API models: the single source of truth for every contract."""
