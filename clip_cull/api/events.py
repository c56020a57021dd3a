"""What a Library tells while it works. Every method here does nothing: a caller that wants to
say something (the CLI prints each as one line) overrides the ones it cares about. Nothing in
the api layer prints."""

from __future__ import annotations


class Events:
    def cache_rebuilt(self, store, state_path) -> None:
        """A damaged cache was moved aside (store.rebuilt_from) and built anew."""

    def legacy_imported(self, imported, state) -> None:
        """An older clipcull's journal and settings were brought over from the cache (once)."""

    def legacy_unreadable(self, error) -> None:
        """The cache holds an older clipcull's journal that cannot be read; the state database is used as it is."""

    def loading_model(self, spec) -> None:
        """The model starts loading (seconds)."""

    def model_loaded(self, spec, seconds: float) -> None:
        """open_clip finished loading the model."""

    def scoring_with(self, settings, source) -> None:
        """What the photos are scored with; source: the folder whose recorded settings were used."""

    def warning(self, text: str) -> None:
        """Something worth knowing that does not stop the run (an unknown adjective)."""

    def unreadable(self, failure) -> None:
        """A file that could not be read (scoring.indexer.Failure); the run goes on."""

    def embedding_prompts(self, total: int, settings) -> None:
        """The head's prompts are embedded (once per model, then cached)."""

    def waiting_for_lock(self, lock: str) -> None:
        """Another clipcull process holds the journal; this one waits."""
