"""A folder ranked: the indexing pipeline, ranking and checks, bursts and similar groups, the settings a run scores with, text search."""
