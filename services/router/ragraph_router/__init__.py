"""The router: a grpc.aio V2 server that executes ragraph's declarative RAG graph (guard ->
switch -> encode -> retrieve -> prompt -> generate (streamed) -> classify -> combine) over the
encoder and LLM services and a vector store. Never imports MLServer: its generated stubs collide
with ours in one process."""
