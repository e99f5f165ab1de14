"""Chroma: the derived vector index (PostgreSQL is the system of record).

- ``collection``: the client, and the collection bound to one embedding model;
- ``chunks``: a document's chunks (records, metadata, reads and raw writes);
- ``writes``: the writes a batch makes to its documents, applied in few calls;
- ``index``: ``ChromaIndex``, the async face the index stage and the tools use;
- ``folder``: the locks of an embedded folder shared by processes of one host.
"""
