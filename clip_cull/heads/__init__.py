"""Heads turn cached CLIP embeddings into aesthetic scores."""
