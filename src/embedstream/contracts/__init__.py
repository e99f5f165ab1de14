"""Message contracts generated from the pydantic models.

- ``catalog``: every stream (channel), its producer and consumers, and every message type
  with its payload model: the one table the generators and the subscriber kit read.
- ``codec``: the mapping between a stream entry's fields and the JSON body a pact (or a
  JSON Schema) describes.
- ``json_schemas`` / ``asyncapi``: the generated documents under ``schemas/``.
- ``compat``: whether a schema change breaks consumers of a released contract.
- ``export``: rendering, writing and checking ``schemas/`` (``embedstream schemas``).
"""
