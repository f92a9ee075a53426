"""Hosting glue shared by ragraph's MLServer services (encoder, llm): settings base, the
servicer that validates V2 requests and maps errors, the runtime base class, a micro-batcher."""
