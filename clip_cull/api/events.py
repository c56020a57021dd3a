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

    def ranked(self, ranking) -> None:
        """The photos are embedded and ranked (api.Ranking); what a workflow does next follows."""

    def tags_planned(self, plan, dry_run: bool) -> None:
        """What `tag` would write (api.TagPlan), said before anything is written."""

    def moves_resumed(self, finished: list[int], notes: list[str]) -> None:
        """Move runs an earlier process left interrupted were finished first (ids), with notes."""

    def moves_planned(self, plan, dry_run: bool) -> None:
        """What `move` would do (api.MovePlan), said before anything is journaled or moved."""

    def review_serving(self, url: str, photos: int, stacks: int) -> None:
        """The review page is served at url (it holds the access token) until Ctrl-C."""

    # --- the research workflows: AVA (api.AvaExperiment), your ratings (api.Taste), caches merged ---

    def ava_loaded(self, ava, split) -> None:
        """AVA.txt is read (research.ava.AvaSet: .ids, .paths with None where the image is not in
        the folder) and the split made (research.ava.Split: .train, .validation, .test, .source)."""

    def features_read(self, what: str, features) -> None:
        """The images of one part (what: train, validation, test, train+validation) are embedded or
        read from the cache (research.train.AvaFeatures: .ids used, .missing, .unreadable)."""

    def finetuning(self, batch: int, processes: int, per_process: int, loader_workers: int, device) -> None:
        """Fine-tuning starts: the total batch shared by the processes, the DataLoader workers of
        each, and where it runs. Told by the first process only."""

    def epoch_finished(self, report) -> None:
        """A fine-tuning epoch ended (research.finetune.EpochReport). Told by the first process only."""

    def ratings_read(self, rated) -> None:
        """The folders' photos are embedded and your ratings read (api.taste.RatedPhotos: .photos
        found, .paths rated, .counts() of each rating)."""

    def caches_unreachable(self, missing: list[str], into) -> None:
        """Other processes' cache files are not on this machine: `clipcull cache merge` them into `into`."""
