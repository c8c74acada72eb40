"""DiWA: diverse weight averaging of fine-tuned runs from a shared initialisation (arXiv:2205.09739)."""
