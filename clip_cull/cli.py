"""The `clipcull` command: options in, library calls, output out. No logic of its own."""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from clip_cull import __version__
from clip_cull.actions.groups import DEFAULT_SIMILARITY, DEFAULT_WINDOW_S, best_of_each_group
from clip_cull.encoder import ModelSpec
from clip_cull.errors import ClipCullError
from clip_cull.files import HEIF_HINT, heif_available, is_raw
from clip_cull.heads import resolve_head
from clip_cull.images import DEFAULT_MAX_PIXELS, RAW_HINT, rawpy_available
from clip_cull.files import DEFAULT_MAX_FILE_BYTES
from clip_cull.indexer import Failure, IndexOptions, ModelSession
from clip_cull.paths import default_db_path
from clip_cull.prompts import DEFAULT_NEGATIVE, DEFAULT_POSITIVE
from clip_cull.distributed import local_rank, torchrun_shard, wait_for_all
from clip_cull.ranking import Checks, FolderRanking, group_ranked, index_folders, rank_folders
from clip_cull.store import Store
from clip_cull import ui

EXIT_OK = 0
EXIT_ERROR = 1  # the run could not be done: bad folder, model or cache
EXIT_USAGE = 2  # wrong options (typer's own)
EXIT_UNREADABLE = 3  # --strict, and some photos could not be read
EXIT_INTERRUPTED = 130

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
LAST_RANK = "last_rank"

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 error (folder, model or cache unusable); 2 bad options; "
    "3 some photos could not be read and --strict was given; 130 interrupted."
)

app = typer.Typer(
    name="clipcull",
    help=(
        "Rank and cull photos by aesthetic quality with CLIP.\n\n"
        "Embeddings are cached in SQLite, so only new or changed photos are embedded again. "
        + EXIT_CODES_HELP
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --- shared options ----------------------------------------------------------------------

DbOpt = Annotated[
    Optional[Path],
    typer.Option("--db", envvar="CLIPCULL_DB", help="Cache database file. \\[default: the user cache folder]"),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", envvar="CLIPCULL_MODEL",
        help=f"open_clip model name, or a JSON model config file. \\[default: {DEFAULT_MODEL}]",
    ),
]
PretrainedOpt = Annotated[
    Optional[str],
    typer.Option(
        "--pretrained", "-p", envvar="CLIPCULL_PRETRAINED",
        help=f"Pretrained tag, or a local checkpoint file (.pt/.bin/.safetensors). \\[default: {DEFAULT_PRETRAINED}]",
    ),
]
class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


DeviceOpt = Annotated[
    Device, typer.Option("--device", help="Where the model runs; auto tries CUDA, then MPS, then the CPU.")
]
class Precision(str, Enum):
    fp32 = "fp32"
    int8 = "int8"
    bf16 = "bf16"


PrecisionOpt = Annotated[
    Optional[Precision],
    typer.Option(
        "--precision", envvar="CLIPCULL_PRECISION",
        help="CPU precision of the image model: fp32 (exact), int8 (several times faster, embeddings "
        "slightly different and cached apart) or bf16. See BENCHMARKS.md. \\[default: fp32]",
    ),
]
BatchOpt = Annotated[
    Optional[int], typer.Option("--batch-size", min=1, help="Photos per model batch. \\[default: 32 on the CPU, 128 on a GPU]")
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", min=1, help="Threads that read and decode photos beside the model.")
]
MaxPixelsOpt = Annotated[
    int, typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this (decompression bombs).")
]
MaxFileSizeOpt = Annotated[
    int, typer.Option("--max-file-size", min=1, metavar="MiB", help="Refuse files larger than this many MiB before reading them (each photo is read whole into memory).")
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Exit with code 3 when any photo could not be read.")
]
HeadOpt = Annotated[
    Optional[str],
    typer.Option(
        "--head", envvar="CLIPCULL_HEAD",
        help="fixed, context, ensemble (the paper's prompt heads), or a head file: a trained .safetensors/.npz "
        "or a LAION aesthetic .pth. `clipcull heads` lists them. \\[default: ensemble]",
    ),
]
PositiveOpt = Annotated[
    Optional[str], typer.Option("--positive", help=f"Positive adjective of a prompt head. \\[default: {DEFAULT_POSITIVE}]")
]
NegativeOpt = Annotated[
    Optional[str], typer.Option("--negative", help=f"Negative adjective of a prompt head. \\[default: {DEFAULT_NEGATIVE}]")
]


GroupsOpt = Annotated[bool, typer.Option("--groups", help="Find bursts and near-duplicates (shown as a group number).")]
SimilarityOpt = Annotated[
    float, typer.Option("--similarity", min=0.0, max=1.0, help="Cosine of the embeddings above which two photos are near-duplicates.")
]
WindowOpt = Annotated[
    float, typer.Option("--burst-window", min=0.0, help="Seconds between capture times within which near-duplicates form a burst.")
]


PenalizeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--penalize", metavar="blur,exposure",
        help="Rank blurry and/or badly exposed photos below all others: score - (max - min score) x number of such flags.",
    ),
]
BlurBelowOpt = Annotated[
    Optional[float],
    typer.Option("--blur-below", help="Absolute focus threshold for 'blurry'. \\[default: a quarter of the folder's median focus]"),
]


def _checks(penalize: str | None, blur_below: float | None) -> Checks:
    wanted = frozenset(p.strip() for p in (penalize or "").split(",") if p.strip())
    if wanted - {"blur", "exposure"}:
        raise typer.BadParameter("--penalize takes blur, exposure or both (blur,exposure)")
    return Checks(wanted, blur_below)


@dataclass
class RunSettings:
    roots: list[str]
    model: str
    pretrained: str
    positive: str | None
    negative: str | None
    precision: str = "fp32"
    head: str = "ensemble"

    def as_dict(self) -> dict:
        return vars(self).copy()


def _version(value: bool) -> None:
    if value:
        print(f"clipcull {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


@app.command(epilog=EXIT_CODES_HELP)
def rank(
    folders: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or photo files.")],
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=1, help="Show only the best N.")] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object a line: rank, path, score, label, ...; unreadable files as JSON objects (path, error) on stderr.")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
    db: DbOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = max(1, os.cpu_count() or 1),
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_file_size: MaxFileSizeOpt = DEFAULT_MAX_FILE_BYTES // 2**20,
    strict: StrictOpt = False,
    head: HeadOpt = None,
    positive: PositiveOpt = None,
    negative: NegativeOpt = None,
    groups: GroupsOpt = False,
    similarity: SimilarityOpt = DEFAULT_SIMILARITY,
    burst_window: WindowOpt = DEFAULT_WINDOW_S,
    penalize: PenalizeOpt = None,
    blur_below: BlurBelowOpt = None,
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard", metavar="K/N",
            help="Embed only the K-th of N disjoint shares of the photos (K from 0) and print no ranking: "
            "N processes, on several GPUs or machines sharing the cache, split a folder. Under "
            "`torchrun --nproc-per-node N -m clip_cull rank` the shares are set for you and process 0 "
            "prints the ranking once all are done.",
        ),
    ] = None,
) -> None:
    """Embed new or changed photos, then print all photos ranked by aesthetic score, best first.

    The score is the paper's prompt ensemble: cos(photo, T+) - cos(photo, T-), where T+ averages the embeddings of "a <positive> picture, of a #<class>" over the 1000 ImageNet classes and T- those of the negative adjective. The label says which of the two is closer.
    """
    if json_lines and csv_out:
        raise typer.BadParameter("choose one of --json and --csv")
    settings = RunSettings(
        [str(f) for f in folders],
        model or DEFAULT_MODEL,
        pretrained or DEFAULT_PRETRAINED,
        positive,
        negative,
        (precision or Precision.fp32).value,
        head or "ensemble",
    )
    options = IndexOptions(batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                           max_file_bytes=max_file_size * 2**20)
    share = _parse_shard(shard) if shard else torchrun_shard()
    if share:
        share_result = _run(settings, db, device, options, shard=share)
        if shard or share[0] != 0:
            if not shard:
                wait_for_all()
            _finish(share_result, strict)
            return
        wait_for_all()  # process 0 ranks once every share is embedded
        if db and "{rank}" in str(db):  # per-process cache files: fold the others' into process 0's
            from clip_cull.cli_cache import merge_process_caches

            merge_process_caches(db, share[1])
    result = _run(settings, db, device, options, groups=(similarity, burst_window) if groups else None,
                  checks=_checks(penalize, blur_below), json_errors=json_lines)
    ranked = result.ranked[:limit] if limit else result.ranked
    group_of = result.groups if groups else None
    if json_lines:
        ui.write_json_lines(ranked, sys.stdout, group_of)
    elif csv_out:
        ui.write_csv(ranked, sys.stdout, group_of)
    elif ranked:
        ui.stdout_console().print(ui.ranking_table(ranked, group_of))
    _finish(result, strict)


@app.command(epilog=EXIT_CODES_HELP)
def best(
    folders: Annotated[
        Optional[list[Path]],
        typer.Argument(help="Folders or photos. \\[default: the folders of the last `clipcull rank`]"),
    ] = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many photos to print.")] = 20,
    print0: Annotated[bool, typer.Option("--print0", "-0", help="End each path with NUL instead of a newline (xargs -0).")] = False,
    db: DbOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = None,
    batch_size: BatchOpt = None,
    workers: WorkersOpt = max(1, os.cpu_count() or 1),
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_file_size: MaxFileSizeOpt = DEFAULT_MAX_FILE_BYTES // 2**20,
    strict: StrictOpt = False,
    head: HeadOpt = None,
    positive: PositiveOpt = None,
    negative: NegativeOpt = None,
    unique: Annotated[bool, typer.Option("--unique", help="Only the best photo of each burst or near-duplicate group.")] = False,
    similarity: SimilarityOpt = DEFAULT_SIMILARITY,
    burst_window: WindowOpt = DEFAULT_WINDOW_S,
    include_blurry: Annotated[bool, typer.Option("--include-blurry", help="Also print photos flagged blurry (left out by default).")] = False,
    penalize: PenalizeOpt = None,
    blur_below: BlurBelowOpt = None,
) -> None:
    """Print the paths of the best photos, best first, one a line, for scripts.

    Without folders it uses the folders, model and prompts of the last `clipcull rank` (options given here still win). New or changed photos are embedded first.
    """
    store = _open_store(db)
    last = store.get_setting(LAST_RANK) if not folders else None
    store.close()
    if not folders and not last:
        _fail("no folders given and no earlier `clipcull rank` to take them from: clipcull best FOLDER")
    base = last or {}
    settings = RunSettings(
        [str(f) for f in folders] if folders else base["roots"],
        model or base.get("model") or DEFAULT_MODEL,
        pretrained or base.get("pretrained") or DEFAULT_PRETRAINED,
        positive or base.get("positive"),
        negative or base.get("negative"),
        precision.value if precision else base.get("precision", "fp32"),
        head or base.get("head") or "ensemble",
    )
    options = IndexOptions(batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                           max_file_bytes=max_file_size * 2**20)
    result = _run(settings, db, device, options, remember=False, groups=(similarity, burst_window) if unique else None,
                  checks=_checks(penalize, blur_below))
    chosen = [p for p in result.ranked if include_blurry or "blurry" not in p.flags]
    if unique:
        chosen = best_of_each_group(chosen, result.groups)
    end = "\0" if print0 else "\n"
    sys.stdout.write("".join(p.path + end for p in chosen[:top]))
    sys.stdout.flush()
    _finish(result, strict)


# --- the shared run ----------------------------------------------------------------------


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--shard takes K/N, e.g. 0/2 (got {text!r})") from None
    if not (n >= 1 and 0 <= k < n):
        raise typer.BadParameter(f"--shard K/N needs 0 <= K < N (got {text!r})")
    return k, n


def _run(
    settings: RunSettings,
    db: Path | None,
    device: Device,
    options: IndexOptions,
    remember: bool = True,
    shard: tuple[int, int] | None = None,
    groups: tuple[float, float] | None = None,
    checks: Checks = Checks(),
    json_errors: bool = False,
) -> FolderRanking:
    """Index (and, without a shard, rank) with the user's settings; errors become one line."""
    _quiet_libraries()
    err = ui.stderr_console()
    store = _open_store(db)
    try:
        head = resolve_head(settings.head, settings.positive, settings.negative)
        if hasattr(head, "session"):  # a fine-tuned model brings its own weights
            session = head.session(store, device.value, local_rank(), on_load=_announce_loading(err))
        else:
            session = _model_session(ModelSpec(settings.model, settings.pretrained, settings.precision), store, device, err)
        heif, raw = heif_available(), rawpy_available()

        def on_failure(failure: Failure) -> None:
            if json_errors:  # one JSON object a line on stderr, for scripts
                sys.stderr.write(json.dumps({"path": failure.path, "error": failure.reason,
                                             "remembered": failure.remembered}) + "\n")
                return
            note = " (unchanged since an earlier run)" if failure.remembered else ""
            ui.message(err, f"clipcull: skipped {ui.shown_path(failure.path)}: {failure.reason}{note}", "yellow")

        with ui.progress_bars(err) as bar:
            if shard:
                report, unsupported, _ = index_folders(
                    store, settings.roots, session, options, heif=heif, raw=raw, shard=shard,
                    progress=bar(f"embedding photos (share {shard[0]}/{shard[1]})"), on_failure=on_failure,
                )
                result = FolderRanking([], report, unsupported)
                _summary(err, result, store.path, f"share {shard[0]}/{shard[1]}: ")
                return result
            result = rank_folders(
                store, settings.roots, session, head, options, heif=heif, raw=raw, checks=checks,
                progress=bar("embedding photos"), text_progress=bar("embedding prompts"), on_failure=on_failure,
            )
        if groups:
            result.groups = group_ranked(store, result.ranked, session.model_id, *groups)
        if remember:
            settings.roots = [os.path.abspath(os.path.expanduser(r)) for r in settings.roots]
            store.set_setting(LAST_RANK, settings.as_dict())
        _summary(err, result, store.path)
        return result
    except ClipCullError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        ui.message(err, "clipcull: interrupted. Every finished batch is saved; run the command again to go on.", "yellow")
        raise typer.Exit(EXIT_INTERRUPTED)
    finally:
        store.close()


def _announce_loading(err):
    """Loading a model takes seconds: say so before it starts."""
    from clip_cull.encoder import openai_checkpoint_reason

    def announce(spec):
        ui.message(err, f"clipcull: loading {spec.name} ({spec.pretrained}) ...", "dim")
        if (reason := openai_checkpoint_reason(spec)) is not None:
            ui.message(err, f"clipcull: {spec.pretrained} holds OpenAI's weights ({reason}): running them with "
                            f"QuickGELU, as they were trained (as if --model {spec.name}-quickgelu)", "yellow")

    return announce


def _model_session(spec: ModelSpec, store: Store, device: Device, err) -> ModelSession:
    """The model a command runs, loaded on first use, on this process's GPU under torchrun."""
    return ModelSession(spec, store, device.value, on_load=_announce_loading(err), local_rank=local_rank())


def _open_store(db: Path | None) -> Store:
    from clip_cull.cache_merge import per_process_path

    try:  # `{rank}` in the path: one cache file per torchrun process (see `clipcull cache merge`)
        return Store.open(per_process_path(db) if db else default_db_path())
    except ClipCullError as e:
        _fail(str(e))


def _summary(err, result: FolderRanking, db_path: str, prefix: str = "") -> None:
    r = result.report
    total = len(r.ready) + len(r.failures)
    parts = [f"{r.embedded} embedded", f"{r.cached} cached"]
    if r.reused:
        parts.append(f"{r.reused} recognised after a rename or copy")
    if r.failures:
        parts.append(f"{len(r.failures)} unreadable")
    ui.message(err, f"clipcull: {prefix}{total} photos: {', '.join(parts)}. Cache: {db_path}", "dim")
    for kind, hint, files in (
        ("HEIC/HEIF", HEIF_HINT, [f for f in result.unsupported if not is_raw(f)]),
        ("RAW", RAW_HINT, [f for f in result.unsupported if is_raw(f)]),
    ):
        if files:
            ui.message(err, f"clipcull: skipped {len(files)} {kind} files (e.g. {ui.shown_path(files[0])}): {hint}", "yellow")
    if total == 0:
        ui.message(err, "clipcull: no photos found (looked for jpg, png, webp, tiff, bmp, gif, heic and RAW).", "yellow")


def _finish(result: FolderRanking, strict: bool) -> None:
    if strict and result.report.failures:
        raise typer.Exit(EXIT_UNREADABLE)


def _fail(text: str) -> None:
    ui.message(ui.stderr_console(), f"clipcull: error: {text}", "red")
    raise typer.Exit(EXIT_ERROR)


def _quiet_libraries() -> None:
    """Our own lines report bad files; library warnings about them would only repeat it."""
    warnings.filterwarnings("ignore", module="PIL")
    # numpy's "invalid value" / "All-NaN slice" on odd photos: the photo's own line says what matters
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    # open_clip logs its own errors on the root logger; clipcull reports them as one clear line
    logging.getLogger().setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=UserWarning, module="open_clip")
    from PIL import Image

    # Pillow refuses images over 2x this while opening; clipcull applies --max-pixels itself.
    Image.MAX_IMAGE_PIXELS = None


def main() -> None:
    # At exit Python's last garbage collections walk every object torch and open_clip made:
    # about a second after a command that loaded a model. Freezing them first skips that walk
    # (atexit handlers, file flushing and the cache's own close still happen as usual).
    atexit.register(gc.freeze)
    try:
        app()
    except ClipCullError as e:  # a last net: every command's own errors are one line, never a traceback
        _fail_plain(str(e))


def _fail_plain(text: str) -> None:
    ui.message(ui.stderr_console(), f"clipcull: error: {text}", "red")
    sys.exit(EXIT_ERROR)


# The AVA and culling commands live in their own modules; importing them registers them on `app`.
from clip_cull import cli_actions, cli_ava, cli_cache, cli_review, cli_taste  # noqa: E402,F401
