"""Retrieval for ragraph: vector stores behind one URI (embedded SQLite default, Pinecone),
Pinecone-syntax metadata filters, token-aware chunking and idempotent ingestion.

Nothing here imports MLServer or generated stubs except :mod:`.embedder` (our V2 client), so the
router and the CLI can use it in one process."""
