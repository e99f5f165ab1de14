"""Examples built on embedstream's public APIs."""
