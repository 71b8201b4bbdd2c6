"""phiv_train: Phi-3.5-vision model, processor and trainer over validated phiv shards."""
