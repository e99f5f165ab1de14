"""A sample downstream service on the subscriber kit (``embedstream.subscribe``)."""
