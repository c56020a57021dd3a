"""Culling actions: XMP ratings, journaled moves and undo, burst groups, contact sheets."""
