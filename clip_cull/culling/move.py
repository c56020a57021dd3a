"""`clipcull move`: rejects go aside (never deleted), with their sidecars, journaled for undo."""

from __future__ import annotations

import errno
import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from clip_cull.culling.fileops import OTHER_RUNS_PARTIAL_AGE_S, FileOpError, remove_if_duplicate, sweep_partials, transfer
from clip_cull.scoring.groups import best_of_each_group
from clip_cull.culling.interrupt import whole_step
from clip_cull.culling.journal import DONE, FAILED, PLANNED, RUNNING, Identity, Journal, Step
from clip_cull.culling.xmp import existing_sidecars, unusual_sidecars
from clip_cull.core.errors import InputError, Interrupted
from clip_cull.core.files import HEIF_EXTENSIONS, PHOTO_EXTENSIONS, RAW_EXTENSIONS, REJECTS_DIRNAME

ALL_PHOTO_EXTENSIONS = PHOTO_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS
from clip_cull.store.cache import Store


@dataclass
class Selection:
    worst_fraction: float | None = None  # --worst 30%
    below: float | None = None  # --below SCORE
    keep_top: int | None = None  # --keep-top N
    label: str | None = None  # --label "not aesthetic"
    per_group: bool = False  # keep the best of each burst group, move the rest of it
    blurry: bool = False  # --blurry: photos flagged blurry
    badly_exposed: bool = False  # --badly-exposed: photos flagged over- or under-exposed
    eyes_closed: bool = False  # --eyes-closed: photos with a face whose eyes are closed (the faces extra)
    face_soft: bool = False  # --face-soft: photos whose main face is soft (the faces extra)

    def check_extras(self) -> None:
        """FacesUnavailable where a face criterion is chosen without the faces extra: it would pick nothing."""
        from clip_cull.core.faces import require

        asked = [name for name, on in (("--eyes-closed", self.eyes_closed), ("--face-soft", self.face_soft)) if on]
        if asked:
            require(" and ".join(asked))


def select_rejects(ranked: list, selection: Selection, groups: dict[str, int] | None = None) -> list:
    """The photos to move, from a best-first ranking. Criteria combine: a photo moves when any
    chosen criterion picks it."""
    picked: set[str] = set()
    n = len(ranked)
    if selection.worst_fraction is not None:
        count = int(round(n * selection.worst_fraction))
        picked |= {p.path for p in ranked[n - count:]} if count else set()
    if selection.below is not None:
        picked |= {p.path for p in ranked if p.score < selection.below}
    if selection.keep_top is not None:
        picked |= {p.path for p in ranked[selection.keep_top:]}
    if selection.label is not None:
        wanted = selection.label.replace("-", " ")
        picked |= {p.path for p in ranked if p.label == wanted}
    if selection.blurry:
        picked |= {p.path for p in ranked if "blurry" in p.flags}
    if selection.badly_exposed:
        picked |= {p.path for p in ranked if {"overexposed", "underexposed"} & set(p.flags)}
    if selection.eyes_closed:
        picked |= {p.path for p in ranked if "eyes-closed" in p.flags}
    if selection.face_soft:
        picked |= {p.path for p in ranked if "face-soft" in p.flags}
    if selection.per_group and groups:
        best = {p.path for p in best_of_each_group(ranked, groups)}  # each group's best (open eyes preferred) stays
        picked |= {p.path for p in ranked if p.path in groups and p.path not in best}
    return [p for p in ranked if p.path in picked]


class DestinationError(InputError):
    """--to names a place the rejects cannot go."""


def check_destination(to_dir: str | None, roots: list[str]) -> None:
    """Refuse a --to that is an existing file, a folder being culled, or a folder inside one
    (other than its _rejects, which is never ranked): moved photos would be ranked, and moved,
    again. Without --to, each folder's _rejects must be a real folder or not exist yet: a
    symbolic link there (to the folder itself, or anywhere) or a file of that name is refused,
    rather than photos "moved aside" into the folder they came from, into wherever the link
    points, or a run stopped at its first step. Checked before anything is planned or journaled."""
    if to_dir is None:
        for root in roots:
            base = os.path.abspath(os.path.expanduser(root))
            rejects = os.path.join(base if os.path.isdir(base) else os.path.dirname(base), REJECTS_DIRNAME)
            try:
                mode = os.lstat(rejects).st_mode
            except OSError:
                continue  # not there yet: made by the move
            if not stat.S_ISDIR(mode):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
                raise DestinationError(f"{rejects} is {what}; clipcull moves rejects only into a real folder there: "
                                       f"rename it, or choose a destination with --to")
        return
    to = Path(to_dir).expanduser()
    if os.path.lexists(to) and not to.is_dir():
        raise DestinationError(f"--to {to_dir}: it exists and is not a folder")
    target = os.path.realpath(to)
    for root in roots:
        base = os.path.realpath(os.path.expanduser(root))
        if not os.path.isdir(base):
            base = os.path.dirname(base)
        rejects = os.path.join(base, REJECTS_DIRNAME)
        if _is_within(target, rejects):
            continue
        if _is_within(target, base):
            raise DestinationError(
                f"--to {to_dir}: it is {'the folder' if target == base else 'inside the folder'} being culled ({base}); "
                f"choose a folder outside it, or leave --to out for {rejects}")


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def plan_moves(photos: list, roots: list[str], to_dir: str | None, copy: bool = False,
               notes: list[str] | None = None) -> list[Step]:
    """Each photo, its RAW companions and all their sidecars to the destination, keeping the
    path relative to its root folder (default destination: ROOT/_rejects). Names already taken
    get -1, -2, ...; a RAW+JPEG set keeps one common name.

    Every file is planned at most once. A sidecar shared by several photos (IMG_0002.xmp of
    IMG_0002.jpg and IMG_0002.tif) goes with the first of them; when one of its photos does not
    move, it stays where it is (a line in `notes`): never copied, never split. Symbolic links
    stay where they are. A photo whose files cannot be looked at (a name too long, no access)
    is one line in `notes`, and the others are planned."""
    notes = notes if notes is not None else []
    taken: set[str] = set()
    claimed: set[str] = set()
    moving = {m for p in photos for m in [p.path, *getattr(p, "companions", [])]}
    folders: dict[str, list[str]] = {}
    steps = []
    action = "copy" if copy else "move"
    abs_roots = sorted((os.path.abspath(os.path.expanduser(r)) for r in roots), key=len, reverse=True)
    dest_base = Path(os.path.realpath(Path(to_dir).expanduser())) if to_dir else None
    for photo_number, photo in enumerate(photos):
        try:
            files, photo_notes = _files_of(photo, claimed, moving, folders)
            notes.extend(photo_notes)
            if not files:
                continue
            root = next((r for r in abs_roots if photo.path == r or photo.path.startswith(r.rstrip(os.sep) + os.sep)), None)
            base = Path(root) if root and os.path.isdir(root) else Path(photo.path).parent
            dest_root = dest_base if dest_base else base / REJECTS_DIRNAME
            stems = [Path(f).stem for f in [photo.path, *getattr(photo, "companions", [])]]
            first = dest_root / Path(photo.path).relative_to(base)
            odd = _not_a_real_folder(dest_root, first.parent)
            if odd:
                notes.append(f"{photo.path}: {odd}; not moved")
                continue
            stem = _common_stem(first, Path(photo.path).stem, files, stems, taken)
        except OSError as e:
            notes.append(f"{photo.path}: {e.strerror or e}; not moved")
            continue
        for f in files:
            target = _target(f, stem, Path(photo.path).stem, stems)
            taken.add(_folded(target))
            claimed.add(f)
            step = Step(action, f, str(target), set_id=photo_number)  # journaled: undo takes the set back together
            step.photo_set = photo_number  # the files that go together, for this run
            steps.append(step)
    return steps


def _not_a_real_folder(dest_root: Path, folder: Path) -> str | None:
    """Why a photo cannot go into folder below dest_root: a part of the way that exists and is a
    symbolic link (_rejects/day2 -> elsewhere would take the photo there) or not a folder.
    None when every existing part is a real folder."""
    path = dest_root
    for part in folder.relative_to(dest_root).parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None  # the rest is made by the move
        if not stat.S_ISDIR(mode):
            return f"{path} is {'a symbolic link' if stat.S_ISLNK(mode) else 'not a folder'}"
    return None


def _files_of(photo, claimed: set[str], moving: set[str], folders: dict) -> tuple[list[str], list[str]]:
    """The files that travel with this photo, and a line for each one that stays."""
    notes = []
    members = [m for m in [photo.path, *getattr(photo, "companions", [])] if m not in claimed]
    for m in members:
        if stat.S_ISLNK(os.lstat(m).st_mode):
            return [], [f"{m}: a symbolic link; left where it is, with its sidecars"]
    files = list(members)
    for m in members:
        notes += [f"{odd}: named like a sidecar but not a file; left where it is" for odd in unusual_sidecars(m)]
        for sidecar in existing_sidecars(m):
            s = str(sidecar)
            if s in claimed or s in files:
                continue  # shared, and already travelling with an earlier photo of the plan
            if stat.S_ISLNK(os.lstat(s).st_mode):
                notes.append(f"{s}: a symbolic link; left where it is")
                continue
            staying = sorted(o for o in _owners(s, folders) if o not in moving)
            if staying:
                notes.append(f"{s}: shared with {staying[0]}, which stays; the sidecar stays too")
                continue
            files.append(s)
    return files, notes


def _owners(sidecar: str, folders: dict[str, list[str]]) -> list[str]:
    """Every photo in the sidecar's folder whose sidecars include it."""
    folder, name = os.path.split(sidecar)
    if folder not in folders:
        with os.scandir(folder or ".") as entries:
            folders[folder] = [e.path for e in entries
                               if os.path.splitext(e.name)[1].lower() in ALL_PHOTO_EXTENSIONS]
    lowered = name.lower()
    return [p for p in folders[folder]
            if lowered.startswith(Path(p).stem.lower()) and sidecar in {str(s) for s in existing_sidecars(p)}]


def _suffix(name: str, own_stem: str, stems: list[str]) -> str:
    """What follows the photo's stem in a file's name: '.XMP', '.jpg.xmp', '_01.jpg.xmp'."""
    for stem in sorted({own_stem, *stems}, key=len, reverse=True):
        if name.lower().startswith(stem.lower()):
            return name[len(stem):]
    return "." + name  # not named after the photo at all: keep the whole name after the new stem


def _target(f: str, stem: Path, own_stem: str, stems: list[str]) -> Path:
    name = Path(f).name
    if stem.name == own_stem and name.lower().startswith(own_stem.lower()):
        return stem.with_name(name)  # not renamed: every file keeps its name exactly
    return stem.with_name(stem.name + _suffix(name, own_stem, stems))


def _common_stem(first: Path, own_stem: str, files: list[str], stems: list[str], taken: set[str]) -> Path:
    """The destination stem (folder/name without extension) free for every file of a set:
    IMG_0001, else IMG_0001-1, ... so the RAW, the JPEG and their sidecars stay together.
    A name the file system refuses (too long) raises OSError."""
    base = first.with_name(own_stem)
    n = 0
    while True:
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        targets = [_target(f, candidate, own_stem, stems) for f in files]
        if not any(_exists(t) or _folded(t) in taken for t in targets):
            return candidate
        n += 1


def _folded(path: Path) -> str:
    """A planned name as a case-insensitive, normalisation-insensitive file system sees it (exFAT
    and FAT backup drives, macOS): IMG_1.JPG and img_1.jpg, or café in NFC and in NFD, are one
    name there. Two files of a run never get names that differ only so, else the second move
    would meet the first at its destination and stop the run."""
    return unicodedata.normalize("NFC", str(path)).casefold()


def _exists(path: Path) -> bool:
    """lexists that reports a name the file system cannot hold (ENAMETOOLONG) instead of
    calling it free."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    return True


def apply_moves(store: Store, journal: Journal, steps: list[Step], command: dict, run_id: int | None = None,
                notes: list[str] | None = None) -> int | None:
    """See _apply_moves_held; done while holding the journal (Journal.exclusive)."""
    with journal.exclusive():  # one clipcull process at a time changes files and journal
        return _apply_moves_held(store, journal, steps, command, run_id, notes)


def _apply_moves_held(store: Store, journal: Journal, steps: list[Step], command: dict, run_id: int | None = None,
                notes: list[str] | None = None) -> int | None:
    """Journal the plan (unless resuming run_id), then move step by step, marking each done and
    moving the cache's file rows along, so nothing is embedded again. An empty plan is not
    journaled (returns None). Each step's state is kept up to date in `steps` too (see tally).

    Only planned steps are carried out: a step done, undone, failed or left alone by undo is
    never done again. A step whose file is no longer where the plan found it is marked failed
    with a line in `notes`, and so are the files of a photo whose own folder cannot be changed;
    the run then ends failed. A destination that cannot be written, or any other file-system
    error, stops the run: it is marked failed (never resumed) and MoveStopped says why; `clipcull
    undo` reverses what was done. Ctrl-C lets the step in progress end, then raises Interrupted:
    the run stays running (interrupted), for the next `move` to finish or `undo` to reverse."""
    notes = notes if notes is not None else []
    if run_id is None:
        steps = _sources_still_there(steps, notes)
        if not steps:
            return None
    try:
        if run_id is None:
            with whole_step():  # journaled whole, with its id known, or not at all
                run_id = journal.plan("move", command, steps)
        # temporary files a killed copy or sidecar write left: this run's, other unfinished runs'
        sweep_partials(s.dst for s in steps)
        sweep_partials(journal.planned_destinations(), OTHER_RUNS_PARTIAL_AGE_S)
        journal.set_state(run_id, RUNNING)
        failed = _carry_out_all(store, journal, run_id, steps, notes)
        with whole_step():
            journal.set_state(run_id, FAILED if failed else DONE)
    except KeyboardInterrupt:
        if run_id is None:
            raise  # nothing journaled
        raise Interrupted(run_id, sum(s.state == DONE for s in steps), sum(s.state == PLANNED for s in steps)) from None
    return run_id


def _carry_out_all(store: Store, journal: Journal, run_id: int, steps: list[Step], notes: list[str]) -> bool:
    """Every planned step in order, each one whole (Ctrl-C waits for its end). True when some
    failed: a photo set left where it is."""
    failed = False
    staying: set = set()  # photo sets left where they are because one of their files cannot move
    for step in steps:
        if step.state == PLANNED:
            with whole_step():
                failed |= not _one_step(store, journal, run_id, step, steps, staying, notes)
    return failed


def _one_step(store: Store, journal: Journal, run_id: int, step: Step, steps: list[Step], staying: set,
              notes: list[str]) -> bool:
    """Carry out one step and journal it; True when it is done."""
    photo_set = getattr(step, "photo_set", None)
    if photo_set is not None and photo_set in staying:
        _failed(journal, run_id, step, "stays with its photo")
        return False
    try:
        problem = _carry_out(step)
    except (OSError, FileOpError) as e:
        blocked = _unwritable_destination(step, e)
        if blocked is None and _only_this_set(e, photo_set, step, steps):
            # A read-only folder, no permission: that photo and its files stay, the others move
            why = f"{step.src}: {e.strerror or e}; not moved, nor the files that go with it"
            _failed(journal, run_id, step, why)
            notes.append(why)
            staying.add(photo_set)
            return False
        reason = blocked or f"{step.src}: {getattr(e, 'strerror', None) or e}"
        _failed(journal, run_id, step, reason)
        journal.set_state(run_id, FAILED)
        raise MoveStopped(run_id, reason, sum(s.state == DONE for s in journal.steps(run_id))) from e
    if problem:
        _failed(journal, run_id, step, problem)
        notes.append(problem)
        return False
    if step.action == "move":
        _follow_in_cache(store, step.src, step.dst)
    journal.mark(run_id, step.seq, DONE)
    step.state = DONE
    return True


def _failed(journal: Journal, run_id: int, step: Step, why: str) -> None:
    journal.mark(run_id, step.seq, FAILED, why)
    step.state = FAILED


_THIS_SET_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}
_FOLDER_REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}


def _unwritable_destination(step: Step, error: Exception) -> str | None:
    """'FOLDER cannot be written (why)' when the destination refuses the file: the nearest
    folder that exists on the way to step.dst cannot be written (read-only, no permission,
    immutable). os.link and os.rename name the source in their error whichever side refused,
    so the folder itself is asked. None when the destination is not the cause."""
    if not isinstance(error, OSError) or error.errno not in _FOLDER_REFUSED:
        return None
    folder = os.path.dirname(step.dst)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)  # not made yet: the folder it would be made in
    if os.access(folder, os.W_OK):
        return None
    return f"{folder} cannot be written ({error.strerror or error})"


def _only_this_set(error: Exception, photo_set, step: Step, steps: list[Step]) -> bool:
    """Does this error concern this photo's files only (its own folder cannot be changed), and has
    none of them moved yet? Then the set stays whole and the run goes on; anything else (a full
    disk, a set half moved, a run resumed from the journal) stops the run."""
    if photo_set is None or not isinstance(error, OSError) or error.errno not in _THIS_SET_ONLY:
        return False
    if error.filename is None or os.path.dirname(os.fspath(error.filename)) != os.path.dirname(step.src):
        return False  # the destination cannot be written: that concerns every photo, stop
    return not any(getattr(s, "photo_set", None) == photo_set and s.state == DONE for s in steps)


@dataclass
class Tally:
    """What a move run did, for its summary: the chosen photos (their own files) and all files."""

    photos: int  # chosen photos moved (or copied)
    files: int  # files moved: photos, RAW companions, sidecars
    photos_stayed: int  # chosen photos not moved, still where they were (a photo gone meanwhile is not counted)
    files_stayed: int  # planned files not moved, still where they were


def tally(steps: list[Step], photos: set[str]) -> Tally:
    """Count what apply_moves did with these steps (it keeps their states up to date), for the
    chosen `photos`: moved, and left where they were (not planned, or failed)."""
    done = [s for s in steps if s.state == DONE]
    moved = {s.src for s in done} & photos
    return Tally(len(moved), len(done), sum(os.path.lexists(p) for p in photos - moved),
                 sum(s.state != DONE and os.path.lexists(s.src) for s in steps))


def _sources_still_there(steps: list[Step], notes: list[str]) -> list[Step]:
    """The steps whose file is still where it was listed. Another clipcull process (which held
    the journal meanwhile) or program may have moved some since this run listed the folder:
    those are not planned, with a line, so this run never claims a move it did not make."""
    kept = []
    for step in steps:
        if step.src is not None and not os.path.lexists(step.src):
            notes.append(f"{step.src} is gone since the folder was listed (moved meanwhile?); not planned")
            continue
        kept.append(step)
    return kept


class MoveStopped(Exception):
    """A file-system error stopped a move run; what was done before is journaled."""

    def __init__(self, run_id: int, reason: str, done: int):
        super().__init__(reason)
        self.run_id, self.reason, self.done = run_id, reason, done


def _carry_out(step: Step) -> str | None:
    """Do one planned step, or recognise that a killed run did it already. Returns why it
    cannot be done (the file is not where the plan found it), or None once it is done."""
    planned = step.src_id
    src_now, dst_now = Identity.of(step.src), Identity.of(step.dst)
    if src_now is not None and dst_now is None:
        if planned is not None and not (planned.same_file(src_now) or planned.same_content_stamp(src_now)):
            return f"{step.src} changed since the move was planned; left where it is"
        if src_now.kind != "file":
            return f"{step.src} is not a regular file any more; left where it is"
        transfer(step.src, step.dst, copy=step.action == "copy")
        return None
    if src_now is not None and dst_now is not None:
        # A killed run: both names exist. The same inode (a hard link not yet unlinked) or a
        # verified copy with the source's size and time: finish it. Anything else: leave it.
        if planned is not None and (planned.same_file(dst_now) or planned.same_content_stamp(dst_now)):
            if step.action == "copy" or remove_if_duplicate(step.src, step.dst):
                return None
        return f"{step.dst} is taken by another file; {step.src} stays where it is"
    if src_now is None and dst_now is not None and step.action == "move":
        if planned is not None and (planned.same_file(dst_now) or planned.same_content_stamp(dst_now)):
            return None  # moved before a crash, not yet marked
    return f"{step.src} is not where the move was planned from; nothing done"


def _follow_in_cache(store: Store, src: str, dst: str) -> None:
    with store.writing():
        store.db.execute("update or replace files set path = ? where path = ?", [dst, src])


def resume_unfinished(store: Store, journal: Journal, notes: list[str] | None = None,
                      finished: list[int] | None = None) -> int | None:
    """See _resume_unfinished_held; done while holding the journal (Journal.exclusive)."""
    with journal.exclusive():  # one clipcull process at a time changes files and journal
        return _resume_unfinished_held(store, journal, notes, finished)


def _resume_unfinished_held(store: Store, journal: Journal, notes: list[str] | None = None,
                      finished: list[int] | None = None) -> int | None:
    """Finish every move run a killed process interrupted (planned or running), oldest first;
    returns the last one's id (each goes into `finished`). Runs that failed, were undone or met
    a conflict in undo are never resumed."""
    last = None
    while (run := journal.unfinished("move")) is not None:
        apply_moves(store, journal, journal.steps(run.id), {}, run_id=run.id, notes=notes)
        last = run.id
        if finished is not None:
            finished.append(run.id)
    return last
