"""ragraph's LLM service: any Hugging Face causal LM behind the V2 protocol, on MLServer."""
