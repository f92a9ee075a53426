"""ragraph's encoder service: sentence-transformers embeddings (V2 model ``encoder``) and an
embedding-based classifier (V2 model ``classifier``) sharing the same weights, on MLServer."""
