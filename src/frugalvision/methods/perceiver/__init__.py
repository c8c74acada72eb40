"""DQS Perceiver (arXiv 2205.10873): fewer latent queries at inference (our reading of the abstract)."""
