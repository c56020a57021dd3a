"""AvaExperiment: the paper "CLIP knows image aesthetics" reproduced on AVA, from Python.

    from clip_cull.api import AvaExperiment, SplitChoice

    with AvaExperiment("~/AVA", split=SplitChoice(test_ids="test_ids.txt")) as experiment:
        for row in experiment.evaluate(paper_methods=True):
            print(row.method, row.figures["accuracy"]["value"])

One object owns what every AVA workflow sets up: the model (given, else env's, else the
default), the cache and the model session, AVA.txt read and the split made (on first use, in
that order; closed by close()). Its methods are the commands: train_prompts, train_linear,
train_finetune and evaluate; each returns what it found and wrote. The algorithms are in
clip_cull.research; nothing here prints (events and progress tell what happens).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from clip_cull.api.events import Events
from clip_cull.api.library import ProgressFn
from clip_cull.api.models import ModelAndCache, ModelChoice
from clip_cull.core.errors import InputError
from clip_cull.model.heads.prompt import PROMPT_KINDS, PromptHead
from clip_cull.research import train as training
from clip_cull.research.ava import AvaSet, Split, load_ava, make_split, read_ids
from clip_cull.research.metrics import Evaluation
from clip_cull.research.train import AvaFeatures, PairResult, ProbeChoice, PromptChoice


@dataclass(frozen=True)
class SplitChoice:
    """How AVA is split into train, validation and test."""

    file: str | os.PathLike | None = None  # a split file an earlier train run wrote: wins over the rest
    test_ids: str | os.PathLike | None = None  # a file of test image ids (a list, or CSV)
    val_ids: str | os.PathLike | None = None  # a file of validation image ids
    test_fraction: float | None = None  # without id files, the share drawn for test; None: the paper's 25,551 of 255,530
    seed: int = 0  # of the random draw, and of train_linear's cross-validation folds

    def make(self, ava: AvaSet) -> Split:
        if self.file:
            return Split.load(self.file)
        return make_split(ava, read_ids(self.test_ids) if self.test_ids else None,
                          read_ids(self.val_ids) if self.val_ids else None, self.test_fraction, seed=self.seed)


# --- what comes back ---------------------------------------------------------------------------


@dataclass
class MethodRow:
    """One method's figures on the test split, beside its row of the paper's Table 1."""

    method: str
    figures: dict  # n, accuracy, spearman, pearson: each {"value", "ci95": [low, high]}, None where not measured
    paper: dict | None  # Table 1's row, accuracy, spearman, pearson; None: the paper has no such row
    extra: dict = field(default_factory=dict)  # the probe of paper_methods: ridge_alpha, fit_images

    def as_dict(self) -> dict:
        """The row as `clipcull eval --json` writes it."""
        return {"method": self.method, **self.figures, "paper": self.paper, **self.extra}


def method_row(kind: str | None, method: str, evaluation: Evaluation, **extra) -> MethodRow:
    """kind: the Table 1 row it is compared with (majority, fixed, ..., finetune; None: none)."""
    paper = training.PAPER_TABLE.get(kind or "")
    beside = None if paper is None else dict(zip(("row", "accuracy", "spearman", "pearson"), paper))
    return MethodRow(method, evaluation.as_dict(), beside, extra)


@dataclass
class PromptTraining:
    """The prompt search: every pair scored on the fitting images, the chosen pair's head written."""

    pairs: list[PairResult]  # kind, positive, negative, accuracy, spearman
    chosen: PairResult
    head: PromptHead
    images: int  # fitting images used
    criterion: str
    path: Path  # the head file
    split_path: Path  # the split beside it

    def best(self, kind: str, top: int | None = None) -> list[PairResult]:
        """The pairs of one head kind, best first by the criterion."""
        ranked = sorted((p for p in self.pairs if p.kind == kind), key=lambda p: -getattr(p, self.criterion))
        return ranked[:top] if top else ranked


@dataclass
class LinearTraining:
    """The linear probe fitted and written, with its figures on the test split (None: no test images)."""

    head: object  # model.heads.linear.LinearHead
    fit: object  # model.heads.linear.LinearFit: weights, bias, alpha (the ridge strength used)
    images: int  # fitting images used
    evaluation: MethodRow | None
    path: Path
    split_path: Path


@dataclass
class FinetuneResult:
    """A fine-tuning run (resumed where output held one): the best epoch's model is in output."""

    state: object  # research.finetune.TrainState: epoch, best_epoch, best_val, history
    output: Path
    train_images: int
    validation_images: int
    main_process: bool  # False in torchrun's other processes, which write nothing


# --- the experiment ----------------------------------------------------------------------------


class AvaExperiment(ModelAndCache):
    """AVA and its split, embedded through the cache with one model. See the module docstring."""

    def __init__(
        self,
        ava_dir: str | os.PathLike,
        *,
        split: SplitChoice = SplitChoice(),
        model: ModelChoice = ModelChoice(),
        cache: str | os.PathLike | None = None,
        state: str | os.PathLike | None = None,
        fast_decode: bool = False,
        env: Mapping[str, str] | None = None,
        progress: ProgressFn | None = None,
        events: Events | None = None,
    ):
        """ava_dir: AVA.txt and images/{id}.jpg (or the images beside it). fast_decode: reduced-scale
        JPEG decoding, faster, figures differ slightly. env: CLIPCULL_MODEL and the others, as
        Library takes it (the library reads no environment itself)."""
        super().__init__(model, cache, state, env, progress, events)
        self.folder = ava_dir
        self.split_choice = split
        self.options = model.index_options(fast_decode=fast_decode, quality=False)
        self._ava = self._split = None

    def open(self) -> "AvaExperiment":
        """Resolve the model, open the cache, read AVA.txt and make the split (events.ava_loaded);
        each workflow does it first, once."""
        if self._split is None:
            super().open()
            self._ava = load_ava(self.folder)
            self._split = self.split_choice.make(self._ava)
            self.events.ava_loaded(self._ava, self._split)
        return self

    @property
    def ava(self) -> AvaSet:
        return self.open()._ava

    @property
    def split(self) -> Split:
        return self.open()._split

    def close(self) -> None:
        self._split = None
        super().close()

    # --- the workflows ---

    def train_prompts(self, output: str | os.PathLike, choice: PromptChoice = PromptChoice()) -> PromptTraining:
        """The paper's prompt search: every positive x negative adjective pair (27 x 12) for the
        fixed, context and ensemble heads on the fitting images; writes the chosen pair's head
        (and the split beside it)."""
        from clip_cull.model.prompts import negative_adjectives, positive_adjectives

        data = self._features(training.fitting_ids(self.split, choice.fit_on), "projected", choice.fit_on)
        positives, negatives = list(positive_adjectives()), list(negative_adjectives())
        vectors = self._prompt_vectors(training.search_prompts_needed(positives, negatives))
        pairs = training.search_prompts(data.features, data.means, vectors, positives, negatives,
                                        scoring=choice.scoring)
        chosen = training.best_pair(pairs, choice.kind, choice.criterion)
        head = PromptHead(choice.kind, chosen.positive, chosen.negative, scoring=choice.scoring)
        trained_on = {"dataset": str(self.ava.folder), "split": self.split.source, "images": len(data.ids),
                      "fit_on": choice.fit_on, "backbone": self.session.text_model_id, "criterion": choice.criterion,
                      "train_accuracy": chosen.accuracy, "train_spearman": chosen.spearman}
        path, split_path = self._write(head, output, trained_on)
        return PromptTraining(pairs, chosen, head, len(data.ids), choice.criterion, path, split_path)

    def train_linear(self, output: str | os.PathLike, probe: ProbeChoice = ProbeChoice()) -> LinearTraining:
        """The paper's linear probe: z-scored features, least squares (or ridge) on the AVA mean
        score, label = prediction > 5; fitted on the fitting images, evaluated on the test split,
        written with its figures (and the split beside it)."""
        from clip_cull.model.heads.linear import probe_head

        probe.check_features()
        data = self._features(training.fitting_ids(self.split, probe.fit_on), probe.features, probe.fit_on)
        fit = training.fit_probe(data.features, data.means, probe.ridge, self.split_choice.seed)
        head = probe_head(fit, probe.features, self.session.text_model_id)
        evaluation = None
        if self.split.test:
            test = self._features(self.split.test, probe.features, "test")
            evaluation = method_row("linear", f"linear probe ({probe.features})",
                                    training.evaluate_head(head, test.features, test.means, {}))
        trained_on = {"dataset": str(self.ava.folder), "split": self.split.source, "images": len(data.ids),
                      "features": probe.features, "ridge_alpha": fit.alpha, "fit_on": probe.fit_on}
        path, split_path = self._write(head, output, trained_on, evaluation.figures if evaluation else None)
        return LinearTraining(head, fit, len(data.ids), evaluation, path, split_path)

    def train_finetune(self, output: str | os.PathLike, settings, *, fresh: bool = False) -> FinetuneResult:
        """The paper's fine-tuning (research.finetune.FinetuneSettings: epochs, patience, total
        batch, learning rates, momentum, loader workers (None: the default for the device), seed):
        image encoder + Linear(768, 10) + softmax, EMD loss, SGD, early stopping on the validation
        split. Resumes from output unless fresh. Under torchrun every process calls it: they join
        one process group (DistributedDataParallel) and the first one writes and tells events."""
        from clip_cull.core.distributed import torchrun_shard
        from clip_cull.model.heads.finetuned import trained_architecture
        from clip_cull.research import finetune

        output = Path(output)
        distributed = torchrun_shard() is not None
        if distributed:
            _init_distributed(self.model.device)
        first = _dist_rank() == 0
        self.open()
        # One pass through the cache finds unreadable images once (process 0 does it; the
        # others then read the warm cache) so training never stops on a bad file.
        if not first:
            _barrier()
        train = self._features(self.split.train, "projected", "train")
        val = self._features(self.split.validation, "projected", "validation")
        if first and distributed:
            _barrier()
        encoder = self.session.encoder
        if settings.workers is None:
            settings = replace(settings, workers=finetune.default_loader_workers(device_type=encoder.device.type))
        processes = _dist_world()
        per_process = finetune.per_process_batch(settings.batch_size, processes)
        if first:
            self.events.finetuning(settings.batch_size, processes, per_process, settings.workers, encoder.device)
        metadata = {
            "architecture": self.session.spec.architecture,
            # The exact network (QuickGELU for OpenAI's weights) so that it reloads as trained.
            "model_config": trained_architecture(self.session.spec.architecture, encoder.model),
            "backbone": self.session.text_model_id,
            "trained_on": {"dataset": str(self.ava.folder), "split": self.split.source,
                           "train_images": len(train.ids), "validation_images": len(val.ids)},
            "settings": vars(settings),
        }
        if first:
            output.mkdir(parents=True, exist_ok=True)
            self.split.save(output / "split.json")
        state = finetune.train_finetune(encoder, self._images(train.ids, encoder.preprocess),
                                        self._images(val.ids, encoder.preprocess), output, settings, metadata,
                                        self.events.epoch_finished if first else None, fresh)
        return FinetuneResult(state, output, len(train.ids), len(val.ids), first)

    def evaluate(self, heads: Iterable[str] = (), *, paper_methods: bool = False, probe: ProbeChoice = ProbeChoice(),
                 resamples: int = 1000) -> list[MethodRow]:
        """Accuracy, Spearman and Pearson on the test split, with 95% bootstrap intervals, beside
        Table 1: the majority baseline first; with paper_methods the three prompt heads with the
        paper's pairs and a linear probe fitted as probe says; then each head (a name or a file:
        prompt, linear, LAION or fine-tuned). probe.scoring also scores the built-in prompt heads."""
        heads = list(heads)
        if not heads and not paper_methods:
            raise InputError("name the heads to evaluate, or ask for the paper's methods")
        if paper_methods:
            probe.check_features()
        test_features = self._test_features()
        train_means = self.ava.means[[self.ava.index()[i] for i in self.split.train]]
        rows = [method_row("majority", "majority baseline",
                           training.majority_baseline(train_means, test_features("projected").means, resamples))]
        if paper_methods:
            rows += self._paper_rows(test_features, probe, resamples)
        return rows + [self._head_row(name, probe.scoring, test_features, resamples) for name in heads]

    # --- the parts ---

    def _features(self, ids: list[str], kind: str, what: str) -> AvaFeatures:
        """The images of ids embedded through the cache (what names them: train, test, ...)."""
        got = training.ava_features(self.store, self.session, self.ava, ids, kind, self.options,
                                    progress=self._progress(f"embedding {what} images"),
                                    on_failure=self.events.unreadable)
        self.events.features_read(what, got)
        if not got.ids:
            raise InputError(f"no usable {what} images in {self.ava.folder}")
        return got

    def _test_features(self):
        """features(kind) of the test split, embedded once per kind."""
        made: dict[str, AvaFeatures] = {}

        def test_features(kind: str) -> AvaFeatures:
            if kind not in made:
                made[kind] = self._features(self.split.test, kind, "test")
            return made[kind]

        return test_features

    def _prompt_vectors(self, prompts: list[str]) -> dict:
        from clip_cull.scoring.indexer import prompt_embeddings

        return prompt_embeddings(self.store, self.session, prompts, self._progress("embedding prompts"))

    def _paper_rows(self, test_features, probe: ProbeChoice, resamples: int) -> list[MethodRow]:
        """Table 1's prompt rows with the paper's pairs, and a linear probe fitted as probe says."""
        from clip_cull.model.heads.linear import probe_head

        proj = test_features("projected")
        vectors = self._prompt_vectors(training.paper_prompts())
        rows = [method_row(kind, f"{kind} (paper's pairs, {probe.scoring} scoring)",
                           training.evaluate_paper_prompts(kind, proj.features, proj.means, vectors, resamples,
                                                           probe.scoring))
                for kind in PROMPT_KINDS]
        train = self._features(training.fitting_ids(self.split, probe.fit_on), probe.features, probe.fit_on)
        fit = training.fit_probe(train.features, train.means, probe.ridge)  # folds seeded 0, whatever the split's seed
        data = test_features(probe.features)
        how = "least squares" if fit.alpha == 0 else ("CV ridge" if probe.ridge == "auto" else "ridge")
        evaluation = training.evaluate_head(probe_head(fit, probe.features, self.session.text_model_id),
                                            data.features, data.means, {}, resamples)
        return rows + [method_row("linear", f"linear probe ({probe.features}, {how}, fit on {probe.fit_on})",
                                  evaluation, ridge_alpha=fit.alpha, fit_images=len(train.ids))]

    def _head_row(self, name: str, scoring: str, test_features, resamples: int) -> MethodRow:
        from clip_cull.model.heads import resolve_head
        from clip_cull.model.heads.files import check_backbone

        h = resolve_head(name)
        if isinstance(h, PromptHead) and name in PROMPT_KINDS:
            h = PromptHead(h.kind, h.positive, h.negative, h.features, h.backbone, scoring)
        if hasattr(h, "session"):  # a fine-tuned model: run it (cached) on the test images
            data = training.ava_features(self.store, h.session(self.store, self.session.device), self.ava,
                                         self.split.test, "projected", self.options)
            return method_row("finetune", h.name, training.evaluate_head(h, data.features, data.means, {}, resamples))
        data = test_features(h.features)
        check_backbone(h, self.session.text_model_id, self.session.spec.architecture, data.features.shape[1])
        vectors = self._prompt_vectors(h.prompts()) if h.prompts() else {}
        kind = h.kind if isinstance(h, PromptHead) else ("linear" if "linear(" in h.name else None)
        return method_row(kind, h.name, training.evaluate_head(h, data.features, data.means, vectors, resamples))

    def _write(self, head, output, trained_on: dict, evaluation: dict | None = None) -> tuple[Path, Path]:
        """The head file, and the split beside it (FILE.split.json)."""
        from clip_cull.model.heads.files import save_head

        path = save_head(head, output, trained_on, evaluation)
        return path, self.split.save(path.with_name(path.stem + ".split.json"))

    def _images(self, ids: list[str], preprocess):
        """The images of ids with their vote distributions, as fine-tuning reads them."""
        from clip_cull.research.finetune import AvaImages

        where = self.ava.index()
        rows = [where[i] for i in ids]
        counts = self.ava.counts[rows].astype(np.float64)
        return AvaImages([str(self.ava.paths[r]) for r in rows], counts / counts.sum(axis=1, keepdims=True), preprocess)


# --- torchrun ------------------------------------------------------------------------------------


def _init_distributed(device: str) -> None:
    import torch
    import torch.distributed as dist

    from clip_cull.core.distributed import local_rank

    backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if backend == "nccl" and local_rank() is not None:
        torch.cuda.set_device(local_rank())  # one GPU per process, and NCCL's own calls on it
    dist.init_process_group(backend=backend)


def _dist_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _dist_world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
