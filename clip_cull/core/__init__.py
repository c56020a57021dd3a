"""Foundation: errors, files and their identity, safe image decoding, focus/exposure checks, paths, torchrun's environment. Imports nothing else of clipcull."""
