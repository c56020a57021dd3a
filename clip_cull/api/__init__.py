"""clipcull as a library: `Library(folder).rank()`.

    from clip_cull.api import Library

    with Library(["~/shoot"]) as library:
        for path in library.best(3):
            print(path)

One object owns what a command needs: the settings (given here, else the folder's last `rank`,
else an explicit `env` mapping, else the defaults), the cache and the state database (opened on
first use, closed by close()), the head, the model session (loaded only when a photo needs
embedding) and the optional formats (HEIC and RAW on where pillow-heif and rawpy are installed).
Methods return values and print nothing; errors are clip_cull.core.errors.ClipCullError. The
CLI (clip_cull/cli) is a thin layer over it. See docs/api.md.

The research side, likewise: AvaExperiment (the paper on AVA: prompt search, linear probe,
fine-tuning, Table 1), Taste (heads against your own ratings, a personal head), the heads there
are (head_catalogue, describe_head) and cache files merged (merge_cache_files).
"""

from clip_cull.api.ava import (AvaExperiment, FinetuneResult, LinearTraining, MethodRow, PromptTraining,
                               SplitChoice)
from clip_cull.api.cache import MergeResult, merge_cache_files, merge_process_caches
from clip_cull.api.events import Events
from clip_cull.api.heads import describe_head, head_catalogue
from clip_cull.api.library import (Library, MovePlan, MoveResult, NoFolders, Ranking, TagPlan, TagResult, UndoResult,
                                   UndoStopped, open_state, open_store)
from clip_cull.api.models import ModelChoice
from clip_cull.api.taste import NotALinearPrior, PersonalHead, RatedPhotos, RatingsChoice, Taste, TasteRow
from clip_cull.core.errors import ClipCullError
from clip_cull.research.finetune import FinetuneSettings
from clip_cull.research.taste import TooFewRatings
from clip_cull.research.train import ProbeChoice, PromptChoice

__all__ = ["Library", "Ranking", "TagPlan", "TagResult", "MovePlan", "MoveResult", "UndoResult", "Events",
           "ClipCullError", "NoFolders", "UndoStopped", "open_state", "open_store",
           "ModelChoice", "AvaExperiment", "SplitChoice", "ProbeChoice", "PromptChoice", "FinetuneSettings",
           "MethodRow", "PromptTraining", "LinearTraining", "FinetuneResult",
           "Taste", "RatingsChoice", "RatedPhotos", "TasteRow", "PersonalHead", "NotALinearPrior", "TooFewRatings",
           "head_catalogue", "describe_head", "merge_cache_files", "merge_process_caches", "MergeResult"]
