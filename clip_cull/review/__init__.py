"""`clipcull review`: a local, keyboard-driven review page over a folder's ranking."""
