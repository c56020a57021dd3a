"""What clipcull keeps on disk: the embedding cache (cache.py, rebuildable) and the state database (state.py: the journal and folder settings, never rebuilt), and the SQLite code they share."""
