"""Acting on a ranking: XMP ratings through one writer, the journal, moves, undo, tag, ratings
from every source, contact sheets."""
