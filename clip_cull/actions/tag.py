"""`clipcull tag`: star ratings (and rejects, a colour label, keywords) in XMP sidecars."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_cull.actions.fileops import name_too_long, write_atomic
from clip_cull.actions.interrupt import whole_step
from clip_cull.actions.journal import DONE, FAILED, PARTIAL, Journal, Step
from clip_cull.actions.embedded import can_embed, embed_rating
from clip_cull.actions.ratings import find_rating
from clip_cull.actions.xmp import (
    KEYWORD_PREFIX,
    LABELLED_KEYWORD,
    RATED_KEYWORD,
    XmpError,
    existing_sidecars,
    merge,
    parse,
    read_xmp_file,
    sidecar_path,
)
from clip_cull.errors import Interrupted
from clip_cull.files import content_fingerprint

# Default stars by rank in the folder: the top 10% get 5, the next 20% 4, the middle 40% 3,
# the next 20% 2 and the bottom 10% 1.
DEFAULT_QUANTILE_SHARES = ((5, 0.10), (4, 0.20), (3, 0.40), (2, 0.20), (1, 0.10))
REJECT = -1


def parse_star_thresholds(text: str) -> list[tuple[int, float]]:
    """'5:0.31,4:0.29' -> [(5, 0.31), (4, 0.29)]: a score at or above a threshold earns its stars."""
    rules = []
    for part in text.split(","):
        stars, _, value = part.partition(":")
        stars_i = int(stars)
        if not 1 <= stars_i <= 5:
            raise ValueError(f"stars must be 1-5, got {stars_i}")
        rules.append((stars_i, float(value)))
    return sorted(rules, key=lambda r: -r[0])


def star_ratings(scores: np.ndarray, thresholds: list[tuple[int, float]] | None = None,
                 reject_below: float | None = None) -> np.ndarray:
    """Stars 1-5 by quantiles of these scores (default) or by thresholds; -1 below reject_below."""
    scores = np.asarray(scores, np.float64)
    stars = np.ones(len(scores), int)
    if thresholds:
        for value_stars, threshold in sorted(thresholds, key=lambda r: r[0]):
            stars[scores >= threshold] = value_stars
    else:
        order = np.argsort(-scores, kind="stable")
        edges = np.round(np.cumsum([share for _, share in DEFAULT_QUANTILE_SHARES]) * len(scores)).astype(int)
        start = 0
        for (value_stars, _), end in zip(DEFAULT_QUANTILE_SHARES, edges):
            stars[order[start:end]] = value_stars
            start = end
    if reject_below is not None:
        stars[scores < reject_below] = REJECT
    return stars


@dataclass
class SidecarChange:
    photo: str
    sidecar: Path
    before: bytes | None
    after: bytes | None  # None: nothing to write (kept, unchanged, or left alone)
    rating: int
    note: str = ""  # why nothing is written, or what happens
    problem: bool = False  # left alone because it cannot be read or written safely: said on stderr
    action: str = "sidecar"  # or "embedded": the rating goes into the photo's own XMP (tag --embed)
    after_sha: str | None = None  # embedded: sha256 of the photo as it will be written
    source_sha: str | None = None  # embedded: sha256 of the photo as planned
    words: list[str] | None = None  # embedded: clipcull's keywords
    written: bool = False  # set by apply_tags once the file is written and journaled

    @property
    def writes(self) -> bool:
        return self.after is not None or self.after_sha is not None


def plan_tags(
    ranked: list,
    style: str = "lightroom",
    thresholds: list[tuple[int, float]] | None = None,
    reject_below: float | None = None,
    label: str | None = None,
    keywords: bool = True,
    overwrite: bool = False,
    reject_blurry: bool = False,
    darktable_default_counts: bool = False,
    embed: bool = False,
) -> tuple[list[SidecarChange], list[str]]:
    """What each photo's sidecar would become, and one line for each photo whose ratings disagree.

    A rating the photographer set anywhere (either sidecar naming, the RAW companion's sidecar, XMP
    embedded in the photo or its RAW; see actions/ratings.py) is kept unless overwrite: then no
    sidecar of that photo is written. With darktable naming a RAW companion gets its own sidecar;
    with Lightroom naming the RAW and the JPEG share one. The photographer's colour label is left
    as it is unless `label` is given."""
    scores = np.array([p.score for p in ranked])
    stars = star_ratings(scores, thresholds, reject_below)
    if reject_blurry:
        stars = np.where([("blurry" in p.flags) for p in ranked], REJECT, stars)
    changes, disagreements, listings, planned = [], [], {}, set()
    for photo, rating in zip(ranked, stars):
        members = [photo.path, *getattr(photo, "companions", [])]
        found = find_rating(photo.path, members[1:], darktable_default_counts, listings)
        changes += [SidecarChange(photo.path, Path(where), None, None, int(rating), f"left alone: {why}", True)
                    for where, why in found.problems]
        if found.disagreement:
            disagreements.append(found.disagreement)
        if found.rating not in (None, 0) and not overwrite:
            changes.append(SidecarChange(photo.path, Path(found.source), None, None, int(rating),
                                         f"keeps the photographer's rating {found.rating} (--overwrite to replace)"))
            continue
        unreadable = {where for where, _ in found.problems}
        for member in members:
            path = target_sidecar(member, style, listings)
            if path in planned or str(path) in unreadable:
                continue
            planned.add(path)
            changes.append(_sidecar_change(photo, int(rating), path, label, keywords))
        if embed:
            changes.append(_embedded_change(photo, int(rating), keywords))
    return changes, disagreements


def _embedded_change(photo, rating: int, keywords: bool) -> SidecarChange:
    """tag --embed: the rating merged into the photo's own XMP, worked out now (pixels checked)
    and written later from the same bytes."""
    words = [RATED_KEYWORD] + ([f"{KEYWORD_PREFIX}{photo.label.replace(' ', '-')}"] if keywords else [])
    change = SidecarChange(photo.path, Path(photo.path), None, None, rating, "embed", action="embedded", words=words)
    if not can_embed(photo.path):
        change.note = "not embedded: clipcull writes XMP into JPEG, TIFF and DNG only (the sidecar has the rating)"
        return change
    try:
        data = Path(photo.path).read_bytes()
        change.before, new = embed_rating(photo.path, data, rating, words)
    except (OSError, XmpError) as e:
        change.note, change.problem = f"not embedded: {e}", True
        return change
    if change.before.strip() and parse(change.before).properties() == parse(_packet_of(new)).properties():
        change.note = "unchanged"
        return change
    change.source_sha, change.after_sha = content_fingerprint(data), content_fingerprint(new)
    return change


def _packet_of(data: bytes) -> bytes:
    from clip_cull.actions.embedded import current_packet

    return current_packet(data)


# Errors that concern one file or folder (a read-only folder, no permission, a name too long):
# that file is one line and the run goes on. Anything else (a full disk) stops the run.
_THIS_FILE_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOENT,
                   errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EEXIST}


class _ChangedSincePlan(Exception):
    """The file is no longer what the plan read: someone else wrote it meanwhile."""


def _write_embedded(change: SidecarChange) -> None:
    """Recompute from the photo's bytes, which must be those planned, and write atomically."""
    data = Path(change.sidecar).read_bytes()
    if content_fingerprint(data) != change.source_sha:
        raise _ChangedSincePlan(f"{change.sidecar} changed since the plan; its XMP was not written")
    _, new = embed_rating(change.photo, data, change.rating, change.words)
    if content_fingerprint(new) != change.after_sha:
        raise OSError(f"{change.sidecar}: exiv2 wrote something other than planned; not written")
    write_atomic(change.sidecar, new)


def _write_sidecar(change: SidecarChange) -> None:
    """Write the merged sidecar only over the very bytes it was merged from (or where there was
    none, only while there still is none): another program (darktable, Lightroom, a second
    clipcull) that wrote it between plan and write keeps its edit, reported, never overwritten."""
    path = Path(change.sidecar)
    if not os.path.lexists(change.photo):  # a `move` meanwhile: no sidecar left behind alone
        raise _ChangedSincePlan(f"{change.photo} is gone since the plan (moved?); {path.name} was not written")
    if change.before is None:
        if os.path.lexists(path):
            raise _ChangedSincePlan(f"{path} was created by another program since the plan; left as it is")
    else:
        try:
            st = os.lstat(path)
            now = read_xmp_file(path) if stat.S_ISREG(st.st_mode) else None
        except (OSError, XmpError):
            now = None
        if now != change.before:
            raise _ChangedSincePlan(f"{path} changed since the plan; left as it is")
    write_atomic(path, change.after)


def target_sidecar(photo: str, style: str, listings: dict | None = None) -> Path:
    """The sidecar to write: the style's naming, or the one that exists under it with .XMP."""
    wanted = sidecar_path(photo, style)
    names = None if listings is None else listings.get(str(Path(photo).parent))
    for existing in existing_sidecars(photo, names=names):
        if existing.name.lower() == wanted.name.lower() and existing.name[:-4] == wanted.name[:-4]:
            return existing
    return wanted


def _sidecar_change(photo, rating: int, path: Path, label: str | None, keywords: bool) -> SidecarChange:
    def left_alone(why: str, before=None) -> SidecarChange:
        return SidecarChange(photo.path, path, before, None, rating, f"left alone: {why}", True)

    if name_too_long(path):  # a photo's name near the limit, and the sidecar's adds to it
        return left_alone(f"a name of {len(os.fsencode(path.name))} bytes is more than the file system allows; "
                          f"no sidecar can have it")
    before = None
    if os.path.lexists(path):
        if os.path.islink(path):
            return left_alone("is a symbolic link; clipcull does not write through links")
        try:
            before = read_xmp_file(path)
        except XmpError as e:
            return left_alone(str(e))
    try:
        current = parse(before).fields() if before is not None else None
        words = [RATED_KEYWORD] + ([f"{KEYWORD_PREFIX}{photo.label.replace(' ', '-')}"] if keywords else [])
        new_label, drop_label = None, False
        if label and rating == 5:
            new_label, words = label, words + [LABELLED_KEYWORD]
        elif label and current is not None and LABELLED_KEYWORD in current.keywords:
            drop_label = True  # clipcull labelled it before, and it is no longer a 5-star photo
        elif current is not None and LABELLED_KEYWORD in current.keywords:
            words.append(LABELLED_KEYWORD)  # without --label, labels stay as they are, and so does the mark
        after = merge(before, rating, new_label, words, drop_label)
    except XmpError as e:
        return left_alone(str(e), before)
    if before is not None and _same_properties(before, after):
        return SidecarChange(photo.path, path, before, None, rating, "unchanged")
    return SidecarChange(photo.path, path, before, after, rating, "create" if before is None else "merge")


def _same_properties(before: bytes, after: bytes) -> bool:
    return parse(before).properties() == parse(after).properties()


def apply_tags(journal: Journal, changes: list[SidecarChange], command: dict,
               notes: list[str] | None = None) -> int | None:
    """See _apply_tags_held; done while holding the journal (Journal.exclusive)."""
    with journal.exclusive():  # one clipcull process at a time changes files and journal
        return _apply_tags_held(journal, changes, command, notes)


def _apply_tags_held(journal: Journal, changes: list[SidecarChange], command: dict,
               notes: list[str] | None = None) -> int | None:
    """Journal the plan, then write each sidecar atomically (a read-only one stays read-only),
    marking each step done (and the change `written`). Nothing to write: no run is journaled,
    and None is returned.

    A file that changed between plan and write, or whose folder cannot be written, is not
    written: its step is marked failed, the change gets problem=True and a note, which also goes
    into `notes`; the run goes on and ends failed. An error that stops the run (a full disk)
    marks the step and the run failed before it propagates. Ctrl-C lets the write in progress
    end, then raises Interrupted (the run stays running: interrupted)."""
    notes = notes if notes is not None else []
    writes = [c for c in changes if c.writes]
    if not writes:
        return None
    steps = [Step(c.action, c.photo, str(c.sidecar), c.before,
                  c.after_sha if c.action == "embedded" else content_fingerprint(c.after)) for c in writes]
    run_id = None
    try:
        with whole_step():  # journaled whole, with its id known, or not at all
            run_id = journal.plan("tag", command, steps)
        journal.set_state(run_id, PARTIAL)
        skipped = 0
        for step, change in zip(steps, writes):
            with whole_step():
                skipped += not _write_one(journal, run_id, step, change, notes)
        with whole_step():
            journal.set_state(run_id, FAILED if skipped else DONE)
    except KeyboardInterrupt:
        if run_id is None:
            raise  # nothing journaled
        done = sum(c.written for c in writes)
        raise Interrupted(run_id, done, len(writes) - done - sum(c.problem for c in writes)) from None
    return run_id


def _write_one(journal: Journal, run_id: int, step: Step, change: SidecarChange, notes: list[str]) -> bool:
    """Write one file and journal it; True when it is written."""
    mode = _mode(change.sidecar)
    try:
        if change.action == "embedded":
            _write_embedded(change)
        else:
            _write_sidecar(change)
    except (_ChangedSincePlan, OSError) as e:
        if isinstance(e, OSError) and e.errno not in _THIS_FILE_ONLY:
            journal.mark(run_id, step.seq, FAILED, str(e))  # a full disk, an I/O error: stop
            journal.set_state(run_id, FAILED)
            raise
        why = str(e) if isinstance(e, _ChangedSincePlan) else (
            f"{change.sidecar}: {e.strerror or e}; not written")
        journal.mark(run_id, step.seq, FAILED, why)
        change.note, change.problem = why, True
        notes.append(why)
        return False
    except Exception as e:  # nothing of this step was written (the write is atomic)
        journal.mark(run_id, step.seq, FAILED, str(e))
        journal.set_state(run_id, FAILED)
        raise
    if mode is not None and _mode(change.sidecar) != mode:
        os.chmod(change.sidecar, mode)
    journal.mark(run_id, step.seq, DONE)
    change.written = True
    return True


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.lstat(path).st_mode)
    except OSError:
        return None
