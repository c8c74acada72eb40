"""T-Food (arXiv:2204.09730): transformer decoders with multimodal regularisation for cross-modal food retrieval."""
