"""A model-based test of clipcull's file actions (issue 18, point 9): a Hypothesis state machine
over a small shoot of real photos, driving clipcull's own library the way the CLI composes it
(tag, tag --embed, move, move --copy, undo, review decisions) while a photographer and other
programs edit, rename, delete and replace files meanwhile.

The shoot: six JPEGs (two in a subfolder) and a TIFF made by conftest.make_photo, a RAW companion
IMG_0002.CR2 beside IMG_0002.jpg, and IMG_0003.xmp, the photographer's sidecar written by
exiftool (rating, label, title, keywords). The ranking is not CLIP's: each photo gets a score from
a drawn permutation, so every step takes milliseconds.

Invariants, checked after every step with values computed here (Pillow, hashlib, exiftool):
1. every photo exists exactly once as a regular file under the shoot (copies that `move --copy`
   made may exist once more in the backup folder), identified by its decoded pixels; its bytes
   are the last ones known unless `tag --embed` wrote into it (then only the pixels must match);
   the RAW's bytes exist once under the shoot; no `.clipcull-partial` file is left.
2. every property a person or another program set (exiftool's ratings, labels, titles and
   keywords, the photographer's sidecar, review decisions) still holds its value, unless clipcull
   was told to replace it (--overwrite) or the photographer's own later action replaced it.
3. at the end, undoing every run newest first gives back the shoot byte for byte (names and
   sha256 of every file) when nobody else touched it; when someone did, 1 and 2 still hold.

Time: CLIPCULL_MODEL_EXAMPLES (default 200) examples of CLIPCULL_MODEL_STEPS (default 25) steps.
Examples are derandomized, so a failure reproduces; CLIPCULL_MODEL_SEED=N explores others instead.
Hypothesis prints the failing sequence of steps.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, seed, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from PIL import Image

from clip_cull.culling import fileops
from clip_cull.culling import tag as tagging
from clip_cull.culling.fileops import PARTIAL_SUFFIX
from clip_cull.culling.journal import Journal
from clip_cull.culling.move import (MoveStopped, Selection, apply_moves, check_destination, plan_moves,
                                    resume_unfinished, select_rejects)
from clip_cull.culling.undo import undo_run
from clip_cull.core.files import walk_photos
from clip_cull.review.decisions import DecisionWriter, ReviewError
from clip_cull.store.state import StateStore
from clip_cull.store.cache import Store
from helpers import fails_after, make_photo, Shot

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool is not installed (.ci/run installs it)")

EXAMPLES = int(os.environ.get("CLIPCULL_MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("CLIPCULL_MODEL_STEPS", "25"))
SEED = os.environ.get("CLIPCULL_MODEL_SEED")

PHOTO_SUFFIXES = (".jpg", ".tif")
PERSON_LABELS = ("Red", "Yellow", "Blue", "Purple")  # never Green: clipcull's --label and review's pick
PERSON_RATINGS = (-1, 1, 2, 3, 4, 5)
ANY = "<any value>"  # an expectation that no longer holds anything to



@pytest.fixture(autouse=True)
def time_limit():
    """Nothing here may hang (exiftool is kept open): the machine gets 10 s an example, the rest 240 s."""
    with fails_after(max(240, 10 * EXAMPLES)):
        yield


# --- the one place the journal is opened ------------------------------------------------------------


def open_journal(tmp: Path) -> tuple[Store, Journal]:
    """The cache and the journal, as `clipcull tag/move/undo` open them: the cache (moves update
    its rows) and the state database the journal lives in (store.state; closing the cache closes
    it too, so every caller closes one thing)."""
    store = Store.open(tmp / "cache" / "clipcull.db")
    state = StateStore.open(tmp / "state" / "state.db")
    close_cache = store.close

    def close_both() -> None:
        close_cache()
        state.close()

    store.state, store.close = state, close_both
    return store, Journal(state)


# --- exiftool, kept open ----------------------------------------------------------------------------


class ExifTool:
    """One exiftool process (-stay_open): each command costs milliseconds instead of a Perl start."""

    def __init__(self):
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([EXIFTOOL, "-stay_open", "True", "-@", "-"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors)

    def __call__(self, *args) -> str:
        assert not any("\n" in str(a) for a in args)
        self.proc.stdin.write(("\n".join(map(str, args)) + "\n-execute\n").encode())
        self.proc.stdin.flush()
        out = b""
        while not out.endswith(b"{ready}\n"):
            chunk = self.proc.stdout.read1(1 << 16)
            if not chunk:
                raise RuntimeError("exiftool stopped")
            out += chunk
        return out[:-len(b"{ready}\n")].decode()

    def write(self, *args) -> None:
        out = self(*args)
        assert "1 image files updated" in out or "1 image files created" in out, (args, out, self.stderr())

    def read(self, paths: list[Path]) -> dict[str, dict]:
        """XMP of each file, one call for all: {path: {tag: value}}."""
        if not paths:
            return {}
        return {d["SourceFile"]: d for d in json.loads(self("-j", "-XMP:all", *paths) or "[]")}

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        try:
            self.proc.stdin.write(b"-stay_open\nFalse\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.errors.close()


# --- the shoot ---------------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pixels(path: Path) -> str:
    """The photo's identity: sha256 of its decoded pixels (metadata edits keep it, anything else not)."""
    with Image.open(path) as im:
        return hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest()[:16]


def tree(root: Path) -> dict[str, str]:
    """Every entry under root: files by sha256, folders and links by kind."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "link" if p.is_symlink() else "dir" if p.is_dir() else sha(p)
    return out


def photographers_sidecar(exif: ExifTool, path: Path) -> None:
    exif.write("-o", path, "-XMP-xmp:Rating=4", "-XMP-xmp:Label=Blue", "-XMP-dc:Title=Golden hour",
               "-XMP-dc:Subject=beach", "-XMP-dc:Subject=family")


def make_shoot(exif: ExifTool, folder: Path) -> None:
    for i, sub in ((1, ""), (2, ""), (3, ""), (4, ""), (5, "day2"), (6, "day2")):
        make_photo(folder / sub / f"IMG_000{i}.jpg", seed=i)
    make_photo(folder / "IMG_0007.tif", seed=7, fmt="TIFF")
    (folder / "IMG_0002.CR2").write_bytes(b"II*\x00 the RAW of IMG_0002 " * 40)
    photographers_sidecar(exif, folder / "IMG_0003.xmp")


@dataclass
class Photo:
    """The model of one photo: its pixels, its bytes while only known programs wrote them."""
    name: str
    key: str  # pixels()
    sha: str | None  # None once `tag --embed` may have written into it: then only the pixels are known
    alive: bool = True  # False once a person replaced it with another picture
    copies: int = 0  # how many copies `move --copy` may have made of it
    clipcull_ratings: set = field(default_factory=set)  # every rating clipcull wrote for it


@dataclass
class Entry:
    """One value set in a slot (a sidecar or a photo's XMP): by a person, by a review decision
    (which `undo` may take back), or an --overwrite that lets clipcull replace it (ANY)."""
    origin: str
    value: object  # int, str, None (absent) or ANY
    run: int | None = None
    maybe_undone: bool = False


def acceptable(entries: list[Entry]):
    """The values a slot's property may hold now: the latest entry's; where review decisions may
    have been undone, theirs and whatever was there before them. None: anything."""
    values = set()
    for e in reversed(entries):
        if e.value is ANY:
            return None
        values.add(e.value)
        if not e.maybe_undone:
            return values
    return None  # back to what was there before anyone set it: nothing to hold


@contextlib.contextmanager
def read_only(folder: Path | None):
    """For one clipcull command, `folder` behaves as on a read-only mount: its entries cannot be
    created, removed or renamed (EROFS). A seam: root ignores permission bits, and these tests may
    run as root. Like tests/test_trust_hostile.py `read_only`, over every call clipcull writes with."""
    if folder is None:
        yield
        return
    where = str(folder)

    def inside(p) -> bool:
        return os.path.dirname(os.path.abspath(os.fspath(p))) == where

    def refuse(first, second=None):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(first), None,
                      None if second is None else os.fspath(second))

    saved = {}

    def guard(name, two_paths=False, only_if_there=None):
        real = saved[name] = getattr(os, name)

        def guarded(*args, **kwargs):
            paths = args[:2] if two_paths else args[:1]
            changed = paths[1:] if name == "link" else paths  # link only adds an entry at its target
            if any(inside(p) for p in changed) and (only_if_there is None or os.path.lexists(args[0]) == only_if_there):
                refuse(*paths)
            return real(*args, **kwargs)
        setattr(os, name, guarded)

    guard("unlink", only_if_there=True)  # ENOENT stays ENOENT
    guard("remove", only_if_there=True)
    guard("rmdir", only_if_there=True)
    guard("mkdir", only_if_there=False)  # EEXIST stays EEXIST
    guard("link", two_paths=True)
    guard("rename", two_paths=True)
    guard("replace", two_paths=True)
    real_open = open

    def guarded_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wxa+") and inside(path):
            refuse(path)
        return real_open(path, mode, *args, **kwargs)
    fileops.open = guarded_open  # write_atomic and copies create their temporary files with open()
    try:
        yield
    finally:
        for name, real in saved.items():
            setattr(os, name, real)
        del fileops.open


_TEMPLATE: dict = {}


def template(exif: ExifTool) -> Path:
    """The shoot, made once per process and copied for each example."""
    if "root" not in _TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="clipcull-model-template-"))
        make_shoot(exif, folder / "shoot")
        _TEMPLATE["root"] = folder / "shoot"
    return _TEMPLATE["root"]


# --- the machine --------------------------------------------------------------------------------------

PICK = st.integers(0, 31)
ORDER = st.permutations(range(16))
READ_ONLY = st.sampled_from([None, None, None, "shoot", "shoot/day2", "shoot/_rejects", "backup"])
SELECTION = st.one_of(
    st.tuples(st.just("worst"), st.sampled_from([0.2, 0.5, 1.0])),
    st.tuples(st.just("keep_top"), st.integers(0, 5)),
    st.tuples(st.just("per_group"), st.lists(st.integers(0, 2), min_size=16, max_size=16)),
)


class ShootMachine(RuleBasedStateMachine):
    exif: ExifTool  # set by the test

    def __init__(self):
        super().__init__()
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory: fsync costs nothing
        self.tmp = Path(tempfile.mkdtemp(prefix="clipcull-model-", dir=shm))
        self.root, self.backup = self.tmp / "shoot", self.tmp / "backup"
        shutil.copytree(template(self.exif), self.root)
        self.original = tree(self.root)
        self.photos: dict[str, Photo] = {}
        for p in sorted(self.root.rglob("*")):
            if p.suffix in PHOTO_SUFFIXES:
                key = pixels(p)
                self.photos[key] = Photo(p.stem, key, sha(p))
        self.raw_sha = sha(self.root / "IMG_0002.CR2")
        self.copy_runs = 0
        # slot -> property -> entries; a slot is ("lr"|"dt"|"emb", photo key) or ("at", path)
        self.expect: dict = defaultdict(lambda: defaultdict(list))
        self.fixed: dict = {}  # slot -> {"Title": str, "Subject": set}: only a person sets these
        key3 = pixels(self.root / "IMG_0003.jpg")
        self.expect[("lr", key3)]["Rating"].append(Entry("person", 4))
        self.expect[("lr", key3)]["Label"].append(Entry("person", "Blue"))
        self.fixed[("lr", key3)] = {"Title": "Golden hour", "Subject": {"beach", "family"}}
        self.review_store, self.writer = None, None
        self.review_runs: set[int] = set()
        # U's list, as the writer keeps it: (its run, the expectations its decision set)
        self.review_stack: list[tuple[int, list[Entry]]] = []
        self.undone: list[int] = []  # the runs `clipcull undo` was run on, in order
        self.interfered = False
        self.quiet = False
        self.made = 0  # names and pictures the person makes: unique
        self.decoded: dict[str, str] = {}  # sha256 -> pixels(), to decode each version once

    def teardown(self):
        if self.review_store is not None:
            self.review_store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- where things are -------------------------------------------------------------------

    def _files(self, top: Path) -> list[Path]:
        return sorted(p for p in top.rglob("*") if not p.is_symlink() and p.is_file()) if top.exists() else []

    def _key(self, path: Path) -> str:
        digest = sha(path)
        if digest not in self.decoded:
            self.decoded[digest] = pixels(path)
        return self.decoded[digest]

    def _locate(self) -> dict[str, Path]:
        """photo key -> its one place under the shoot (invariant 1 checks there is one)."""
        return {self._key(p): p for p in self._files(self.root) if p.suffix in PHOTO_SUFFIXES}

    def _slot_path(self, slot, where: dict[str, Path]) -> Path | None:
        kind, ref = slot
        if kind == "at":
            return Path(ref)
        photo = where.get(ref)
        if photo is None:
            return None
        return {"lr": photo.with_suffix(".xmp"), "dt": photo.with_name(photo.name + ".xmp"), "emb": photo}[kind]

    def _slot_at(self, path: Path, where: dict[str, Path]):
        """The slot a sidecar file is (a photo's, or one left behind on its own)."""
        for key, photo in where.items():
            for kind in ("lr", "dt"):
                if self._slot_path((kind, key), where) == path:
                    return (kind, key)
        return ("at", str(path))

    def _listing(self, order) -> list[Shot]:
        """The shoot as `clipcull tag/move` would rank it: photos (RAW companions paired), best first."""
        walk = walk_photos([self.root])
        shots = [Shot(f.path, order[i % len(order)] / len(order), "", (), walk.companions.get(f.path, []))
                 for i, f in enumerate(walk.photos)]
        for s in shots:
            s.label = "aesthetic" if s.score >= 0.5 else "not aesthetic"
        return sorted(shots, key=lambda s: -s.score)

    def _ro(self, folder: str | None) -> Path | None:
        return None if folder is None else self.tmp / folder

    def _photo_of(self, path: str) -> Photo | None:
        p = Path(path)
        return self.photos.get(self._key(p)) if p.suffix in PHOTO_SUFFIXES and p.exists() else None

    # --- clipcull --------------------------------------------------------------------------------

    @initialize(quiet=st.booleans())
    def who_else(self, quiet):
        """quiet: nobody but clipcull and the review page touches the shoot (invariant 3 is exact)."""
        self.quiet = quiet

    def _tag(self, order, label, overwrite, embed, readonly):
        ranked = self._listing(order)
        if overwrite:  # the photographer's values may go: clipcull was told to replace them
            for shot in ranked:
                key = self._key(Path(shot.path))
                self.expect[("lr", key)]["Rating"].append(Entry("overwrite", ANY))
                if label:
                    self.expect[("lr", key)]["Label"].append(Entry("overwrite", ANY))
                if embed:
                    self.expect[("emb", key)]["Rating"].append(Entry("overwrite", ANY))
        store, journal = open_journal(self.tmp)
        try:
            changes, _ = tagging.plan_tags(ranked, tagging.TagOptions(
                label="Green" if label else None, overwrite=overwrite, embed=embed), journal)
            for c in changes:
                photo = self._photo_of(c.photo)
                if c.writes and photo is not None:
                    photo.clipcull_ratings.add(c.rating)
                    if c.action == "embedded":
                        photo.sha = None  # its bytes change; its pixels must not
            with read_only(self._ro(readonly)):
                tagging.apply_tags(journal, changes, {"command": "tag", "folders": [str(self.root)]}, [])
        finally:
            store.close()

    @rule(order=ORDER, label=st.booleans(), overwrite=st.booleans(), readonly=READ_ONLY)
    def tag(self, order, label, overwrite, readonly):
        self._tag(order, label, overwrite, False, readonly)

    @rule(order=ORDER, overwrite=st.booleans(), readonly=READ_ONLY)
    def tag_embed(self, order, overwrite, readonly):
        self._tag(order, False, overwrite, True, readonly)

    def _move(self, order, selection, copy, readonly):
        ranked = self._listing(order)
        how, value = selection
        groups = {}
        if how == "per_group":  # bursts drawn, not computed: group g of the listing's photos
            groups = {s.path: value[i] for i, s in enumerate(sorted(ranked, key=lambda s: s.path)) if value[i]}
        chosen = select_rejects(ranked, Selection(worst_fraction=value if how == "worst" else None,
                                                  keep_top=value if how == "keep_top" else None,
                                                  per_group=how == "per_group"), groups)
        to = str(self.backup) if copy else None
        check_destination(to, [str(self.root)])
        if copy:
            self.copy_runs += 1
            for shot in chosen:
                self.photos[self._key(Path(shot.path))].copies += 1
        store, journal = open_journal(self.tmp)
        try:
            with read_only(self._ro(readonly)):
                resume_unfinished(store, journal, [], [])
                steps = plan_moves(chosen, [str(self.root)], to, copy, [])
                try:
                    apply_moves(store, journal, steps, {"command": "move", "folders": [str(self.root)]}, notes=[])
                except MoveStopped:
                    pass  # the CLI says so in one line; the journal holds what was done
        finally:
            store.close()

    @rule(order=ORDER, selection=SELECTION, readonly=READ_ONLY)
    def move(self, order, selection, readonly):
        self._move(order, selection, False, readonly)

    @rule(order=ORDER, selection=SELECTION, readonly=READ_ONLY)
    def move_copy(self, order, selection, readonly):
        self._move(order, selection, True, readonly)

    def _undo(self, run_id: int):
        self.undone.append(run_id)
        if run_id in self.review_runs:  # the photographer's decisions of that session may go back
            self._review_maybe_undone(run_id)
        store, journal = open_journal(self.tmp)
        try:
            return undo_run(store, journal, run_id)
        finally:
            store.close()

    @rule()
    def undo_last(self):
        store, journal = open_journal(self.tmp)
        target = journal.last_undoable()
        store.close()
        if target is not None:
            self._undo(target.id)

    @rule(which=st.integers(0, 40))
    def undo_one_run(self, which):
        store, journal = open_journal(self.tmp)
        runs = sorted(r.id for r in journal.runs(1000))
        store.close()
        if runs:
            self._undo(runs[which % len(runs)])

    # --- the review page --------------------------------------------------------------------------

    def _review_maybe_undone(self, run_id):
        for props in self.expect.values():
            for entries in props.values():
                for e in entries:
                    if e.origin == "review" and e.run == run_id:
                        e.maybe_undone = True

    @rule(pick=PICK, action=st.sampled_from(["stars", "reject", "clear", "pick"]), stars=st.integers(1, 5),
          readonly=READ_ONLY)
    def review_decides(self, pick, action, stars, readonly):
        ranked = self._listing(list(range(16)))
        if not ranked:
            return
        shot = sorted(ranked, key=lambda s: s.path)[pick % len(ranked)]
        if self.writer is None:
            self.review_store, _ = open_journal(self.tmp)
            self.writer = DecisionWriter(self.review_store.state, {"command": "review", "folders": [str(self.root)]})
        key = self._key(Path(shot.path))
        sidecar = Path(shot.path).with_suffix(".xmp")
        now = self.exif.read([sidecar]).get(str(sidecar), {}) if sidecar.exists() else {}
        label_now, rating_now = now.get("Label"), now.get("Rating")
        kwargs = {"stars": {"rating": stars}, "reject": {"rating": -1}, "clear": {"clear": True},
                  "pick": {"toggle_pick": True}}[action]
        try:
            with read_only(self._ro(readonly)):
                self.writer.decide(shot.path, shot.companions, **kwargs)
        except ReviewError:
            return  # nothing written (all or nothing)
        runs_now = self.writer.action_runs
        self.review_stack = [item for item in self.review_stack if item[0] in set(runs_now)]  # runs undone
        run = self.writer.run_id
        if run is None:
            return  # the first decision changed nothing: no run, nothing written
        self.review_runs.add(run)
        slot = self.expect[("lr", key)]
        entries = []
        if action == "pick":
            entries.append(("Label", Entry("review", None if label_now == "Green" else "Green", run)))
            if label_now != "Green" and rating_now == -1:  # Lightroom's flags: a pick takes the reject off
                entries.append(("Rating", Entry("review", ANY, run)))  # written 0: unrated, as "clear" below
        else:
            # "clear" writes xmp:Rating 0, which clipcull reads as unrated (README: an explicit 0
            # counts as unrated), so a later `tag` may rate the photo: nothing to hold then.
            entries.append(("Rating", Entry("review", ANY if action == "clear" else kwargs["rating"], run)))
            if action == "reject" and label_now == "Green":  # and a reject the pick
                entries.append(("Label", Entry("review", None, run)))
        if len(runs_now) != len(self.review_stack) + 1:
            return  # no action: the key changed nothing (the sidecar held that already), U skips it
        for prop, entry in entries:
            slot[prop].append(entry)
        self.review_stack.append((runs_now[-1], [entry for _, entry in entries]))
        assert len(runs_now) == len(self.review_stack), "the model lost track of U's list"

    @rule()
    def review_undoes_last(self):
        if self.writer is None:
            return
        actions = self.writer.actions
        try:
            self.writer.undo_last()
        except ReviewError:
            pass  # changed since by someone else, or undone already: left, and said
        if self.writer.actions < actions:
            for entry in self.review_stack.pop()[1]:
                entry.maybe_undone = True

    # --- people and other programs ------------------------------------------------------------------

    def _alive(self, pick) -> tuple[Photo, Path] | None:
        where = self._locate()
        alive = sorted((p for p in self.photos.values() if p.alive and p.key in where), key=lambda p: p.name)
        if not alive:
            return None
        photo = alive[pick % len(alive)]
        return photo, where[photo.key]

    def _person_rating(self, photo: Photo, wanted: int) -> int:
        """A rating the photographer sets. Never one clipcull has written for this photo: the
        journal cannot tell a hand-set value equal to the one clipcull last wrote there from
        clipcull's own (documented: writer.claims_now), so that case would be no finding."""
        if wanted not in photo.clipcull_ratings:
            return wanted
        return next(r for r in PERSON_RATINGS if r not in photo.clipcull_ratings)  # -1: clipcull never rejects here

    def _sidecars(self) -> list[Path]:
        return [p for p in self._files(self.root) if p.suffix.lower() == ".xmp"]

    @precondition(lambda self: not self.quiet)
    @rule(pick=PICK, on_photo=st.booleans(), rating=st.sampled_from(PERSON_RATINGS),
          label=st.sampled_from(PERSON_LABELS), in_place=st.booleans())
    def person_rerates(self, pick, on_photo, rating, label, in_place):
        """Lightroom or darktable re-rate and re-label: the sidecar (made if there is none), or the photo."""
        found = self._alive(pick)
        if found is None:
            return
        photo, path = found
        rating = self._person_rating(photo, rating)
        target = path if on_photo else path.with_suffix(".xmp")
        how = "-overwrite_original_in_place" if in_place else "-overwrite_original"
        if target.exists():
            self.exif.write(how, f"-XMP-xmp:Rating={rating}", f"-XMP-xmp:Label={label}", target)
        else:
            self.exif.write("-o", target, f"-XMP-xmp:Rating={rating}", f"-XMP-xmp:Label={label}")
        slot = self.expect[("emb" if on_photo else "lr", photo.key)]
        slot["Rating"].append(Entry("person", rating))
        slot["Label"].append(Entry("person", label))
        if on_photo:
            photo.sha = sha(path)  # the photographer's bytes now (pixels unchanged)
        self.interfered = True

    @precondition(lambda self: not self.quiet)
    @rule(pick=PICK, with_sidecars=st.booleans())
    def person_renames(self, pick, with_sidecars):
        """Lightroom renames a photo with its RAW and sidecars; a file manager renames it alone."""
        found = self._alive(pick)
        if found is None:
            return
        photo, path = found
        self.made += 1
        stem = f"R{self.made}_{path.stem}"
        if with_sidecars:
            for f in sorted(path.parent.iterdir()):
                if f.name.startswith(path.stem + ".") and f.is_file():
                    f.rename(f.with_name(stem + f.name[len(path.stem):]))
        else:
            for kind in ("lr", "dt"):  # its sidecars stay behind under the old name, on their own
                where = {photo.key: path}
                moved = self.expect.pop((kind, photo.key), None)
                if moved is not None:
                    self.expect[("at", str(self._slot_path((kind, photo.key), where)))] = moved
                if (kind, photo.key) in self.fixed:
                    self.fixed[("at", str(self._slot_path((kind, photo.key), where)))] = self.fixed.pop((kind, photo.key))
            path.rename(path.with_name(stem + path.suffix))
        self.interfered = True

    @precondition(lambda self: not self.quiet)
    @rule(pick=PICK)
    def person_deletes_sidecar(self, pick):
        sidecars = self._sidecars()
        if not sidecars:
            return
        side = sidecars[pick % len(sidecars)]
        slot = self._slot_at(side, self._locate())
        side.unlink()
        self.expect.pop(slot, None)  # the person's own doing: nothing of it to hold
        self.fixed.pop(slot, None)
        self.interfered = True

    @precondition(lambda self: not self.quiet)
    @rule(pick=PICK, rating=st.sampled_from(PERSON_RATINGS), label=st.sampled_from(PERSON_LABELS))
    def person_replaces_sidecar(self, pick, rating, label):
        """Another program writes a new sidecar of its own over the old one (atomically)."""
        sidecars = self._sidecars()
        if not sidecars:
            return
        side = sidecars[pick % len(sidecars)]
        where = self._locate()
        slot = self._slot_at(side, where)
        owner = self.photos.get(slot[1]) if slot[0] != "at" else None
        rating = self._person_rating(owner, rating) if owner else next(
            r for r in PERSON_RATINGS if all(r not in p.clipcull_ratings for p in self.photos.values()))
        self.made += 1
        new = self.tmp / f"new-{self.made}.xmp"
        title = f"Replaced {self.made}"
        self.exif.write("-o", new, f"-XMP-xmp:Rating={rating}", f"-XMP-xmp:Label={label}", f"-XMP-dc:Title={title}",
                        f"-XMP-dc:Subject=kw{self.made}")
        os.replace(new, side)
        self.expect.pop(slot, None)
        self.expect[slot]["Rating"].append(Entry("person", rating))
        self.expect[slot]["Label"].append(Entry("person", label))
        self.fixed[slot] = {"Title": title, "Subject": {f"kw{self.made}"}}
        self.interfered = True

    @precondition(lambda self: not self.quiet)
    @rule(pick=PICK, in_place=st.booleans())
    def person_replaces_photo(self, pick, in_place):
        """Another picture under the same name (an export over the file, in place or by rename)."""
        found = self._alive(pick)
        if found is None:
            return
        photo, path = found
        self.made += 1
        new = make_photo(self.tmp / f"new-{self.made}{path.suffix}", seed=1000 + self.made,
                         fmt="TIFF" if path.suffix == ".tif" else "JPEG")
        if in_place:
            with open(path, "r+b") as f:
                f.truncate(0)
                f.write(new.read_bytes())
            new.unlink()
        else:
            os.replace(new, path)
        key = self._key(path)
        photo.alive = False
        self.photos[key] = Photo(f"{photo.name}*{self.made}", key, sha(path),
                                 clipcull_ratings=set(photo.clipcull_ratings))  # same name: same journal claims
        for kind in ("lr", "dt"):  # the sidecars are the name's: they go with the new picture
            if (kind, photo.key) in self.expect:
                self.expect[(kind, key)] = self.expect.pop((kind, photo.key))
            if (kind, photo.key) in self.fixed:
                self.fixed[(kind, key)] = self.fixed.pop((kind, photo.key))
        self.expect.pop(("emb", photo.key), None)
        self.interfered = True

    @precondition(lambda self: not self.quiet)
    @rule(pick=PICK, rating=st.sampled_from(PERSON_RATINGS))
    def person_adds_darktable_sidecar(self, pick, rating):
        found = self._alive(pick)
        if found is None:
            return
        photo, path = found
        side = path.with_name(path.name + ".xmp")
        if side.exists():
            return
        rating = self._person_rating(photo, rating)
        self.exif.write("-o", side, f"-XMP-xmp:Rating={rating}")
        self.expect[("dt", photo.key)]["Rating"].append(Entry("person", rating))
        self.interfered = True

    # --- invariants ---------------------------------------------------------------------------------

    @invariant()
    def nothing_lost(self):
        self.check_photos()
        self.check_properties()

    def check_photos(self):
        shoot, backup = defaultdict(list), defaultdict(list)
        raws = {"shoot": 0, "backup": 0}
        for top, found, name in ((self.root, shoot, "shoot"), (self.backup, backup, "backup")):
            for p in self._files(top):
                assert not p.name.endswith(PARTIAL_SUFFIX), f"a temporary file is left: {p}"
                if p.suffix in PHOTO_SUFFIXES:
                    key = self._key(p)
                    assert key in self.photos, f"{p}: pixels of no photo of the shoot (changed by a write?)"
                    found[key].append(p)
                elif p.suffix == ".CR2" and sha(p) == self.raw_sha:
                    raws[name] += 1
        for photo in self.photos.values():
            places = shoot[photo.key]
            if photo.alive:
                assert len(places) == 1, f"{photo.name} is under the shoot {len(places)} times: {places}"
                if photo.sha is not None:
                    assert sha(places[0]) == photo.sha, f"{places[0]}: its bytes changed"
            else:
                assert not places, f"{photo.name}, replaced by the photographer, came back: {places}"
            assert len(backup[photo.key]) <= photo.copies, f"{photo.name}: more copies than copied: {backup[photo.key]}"
        assert raws["shoot"] == 1 and raws["backup"] <= self.copy_runs, f"the RAW: {raws}"

    def check_properties(self):
        where = self._locate()
        slots = {slot: self._slot_path(slot, where) for slot in set(self.expect) | set(self.fixed)}
        read = self.exif.read(sorted({p for p in slots.values() if p is not None and p.exists()}))
        for slot, path in slots.items():
            if path is None:
                continue  # its photo was replaced: checked by check_photos
            tags = read.get(str(path), {})
            for prop, entries in self.expect.get(slot, {}).items():
                allowed = acceptable(entries)
                if allowed is None or tags.get(prop) in allowed:
                    continue
                raise AssertionError(f"{path}: {prop} is {tags.get(prop)!r}, expected one of {allowed}")
            fixed = self.fixed.get(slot)
            if fixed:
                assert tags.get("Title") == fixed["Title"], f"{path}: title {tags.get('Title')!r} lost"
                subject = tags.get("Subject", [])
                subject = {subject} if isinstance(subject, str) else set(subject)
                assert fixed["Subject"] <= subject, f"{path}: keywords {fixed['Subject'] - subject} lost"

    # --- the end: undo everything ---------------------------------------------------------------------

    def _undo_all_once(self) -> list[str]:
        """Undo every run not yet undone, newest first: the conflicts met."""
        store, journal = open_journal(self.tmp)
        try:
            runs = sorted((r.id for r in journal.runs(1000) if r.state != "undone"), reverse=True)
        finally:
            store.close()
        return [c for run_id in runs for c in self._undo(run_id).conflicts]

    def undo_everything(self):
        conflicts = self._undo_all_once()
        if not self.interfered:
            assert not conflicts, f"undo met conflicts nobody caused: {conflicts}"
            now = tree(self.root)
            differ = sorted(k for k in set(now) | set(self.original) if now.get(k) != self.original.get(k))
            assert not differ, f"undoing every run did not give the shoot back: {differ}"
            left = self._files(self.backup)
            assert not left, f"copies left: {sorted(map(str, left))}"
        self.check_photos()
        self.check_properties()


@pytest.mark.slow
def test_any_sequence_of_clipcull_and_people_keeps_every_photo_and_every_value():
    exif = ExifTool()

    class Machine(ShootMachine):
        def teardown(self):
            try:
                if sys.exc_info()[0] is None:  # a step failed: that failure is the one to report
                    self.undo_everything()
            finally:
                super().teardown()

    Machine.exif = exif
    if SEED is not None:
        seed(int(SEED))(Machine)
    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=SEED is None,
            database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                  HealthCheck.data_too_large]))
    finally:
        exif.close()



# --- faults the machine found, one regular test each ---------------------------------------------------


def _shoot_of_one(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "shoot"
    photo = make_photo(root / "day2" / "IMG_0006.jpg", seed=6)
    make_photo(root / "IMG_0001.jpg", seed=1)
    return root, photo


@pytest.mark.parametrize("naming", ["IMG_0006.jpg.xmp", "IMG_0006.xmp"])
def test_a_sidecar_made_in_rejects_after_the_move_goes_back_with_its_photo(tmp_path, naming):
    """Found by the machine: move --worst 100%, then darktable (or Lightroom) rates the photo in
    _rejects, making its sidecar there; `undo` brought the photo back and left the rating behind
    in _rejects/day2, apart from its photo."""
    exif = ExifTool()
    try:
        root, photo = _shoot_of_one(tmp_path)
        store, journal = open_journal(tmp_path)
        steps = plan_moves([Shot(str(photo), 0.0, "not aesthetic")], [str(root)], None)
        run_id = apply_moves(store, journal, steps, {"command": "move"})
        rejected = root / "_rejects" / "day2"
        exif.write("-o", rejected / naming, "-XMP-xmp:Rating=-1")
        report = undo_run(store, journal, run_id)
        store.close()
        assert not report.conflicts and photo.exists()
        assert exif.read([photo.parent / naming])[str(photo.parent / naming)]["Rating"] == -1
        assert not (root / "_rejects").exists()
    finally:
        exif.close()


@pytest.mark.parametrize("ratings, first_undone", [((3, 4, 5), 1), ((3, 4, 3), 1), ((3, 4, 5, 2), 2)])
@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_undo_of_an_embed_run_beneath_several_later_ones(tmp_path, fmt, ratings, first_undone):
    """Found by the machine: `tag --embed` run after run into the same photo, then an older run
    undone out of order. Beneath two later runs its undo was a conflict (the next run's bytes were
    required on disk); and when the later runs wrote the same bytes again (3, 4, 3) it took the
    photo straight back to its bytes before the runs, after which undoing the later runs met
    conflicts. Now the older run's way back goes to the next run, and undoing the rest in any
    order gives the exact original bytes."""
    photo = make_photo(tmp_path / f"IMG_0007.{'tif' if fmt == 'TIFF' else 'jpg'}", seed=7, fmt=fmt)
    original = sha(photo)
    store, journal = open_journal(tmp_path)
    runs, written = [], []
    for stars in ratings:
        changes, _ = tagging.plan_tags([Shot(str(photo), 0.5, "")],
                                       tagging.TagOptions(thresholds=[(stars, -1e9)], overwrite=True, embed=True), journal)
        runs.append(tagging.apply_tags(journal, changes, {"command": "tag"}))
        written.append(sha(photo))
    first = undo_run(store, journal, runs[first_undone - 1])
    assert not first.conflicts and sha(photo) == written[-1]  # the last run's rating stays
    for run_id in reversed(runs):
        assert not undo_run(store, journal, run_id).conflicts
    store.close()
    assert sha(photo) == original


def _tag_run(journal, photo: Path, stars: int, embed=False, folder_read_only: Path | None = None) -> int | None:
    """`tag [--embed] --stars STARS:-1e9 --overwrite` on one photo (every photo gets STARS)."""
    changes, _ = tagging.plan_tags([Shot(str(photo), 0.5, "")],
                                   tagging.TagOptions(thresholds=[(stars, -1e9)], overwrite=True, embed=embed), journal)
    if embed:
        changes = [c for c in changes if c.action == "embedded"]
    with read_only(folder_read_only):
        return tagging.apply_tags(journal, changes, {"command": "tag"})


def test_undo_of_an_embed_run_beneath_later_ones_after_a_move(tmp_path):
    """Found by the soak (quiet): `tag --embed` rating 3, 4, then 3 again (the first run's very
    bytes), `move` takes the photo to _rejects, the first run undone out of order: the later runs
    were looked for where the photo is now, not where they wrote before the move, so none was
    found, the bytes "were the first run's" and the photo's bytes from before all runs came back
    over the later runs, whose undo then met conflicts."""
    root, photo = _shoot_of_one(tmp_path)
    before = sha(photo)
    store, journal = open_journal(tmp_path)
    runs = [_tag_run(journal, photo, stars, embed=True) for stars in (3, 4, 3)]
    last = sha(photo)
    moved = apply_moves(store, journal, plan_moves([Shot(str(photo), 0.0, "")], [str(root)], None), {"command": "move"})
    rejected = root / "_rejects" / "day2" / photo.name
    assert not undo_run(store, journal, runs[0]).conflicts and sha(rejected) == last
    for run_id in (moved, runs[2], runs[1]):
        assert not undo_run(store, journal, run_id).conflicts
    store.close()
    assert sha(photo) == before


@pytest.mark.parametrize("embed", [False, True])
def test_undo_of_a_run_whose_write_failed_leaves_a_later_runs_same_bytes(tmp_path, embed):
    """Found by the machine (quiet): `tag` in a read-only folder (its write failed, journaled
    failed), then `tag` again with the same stars, which wrote exactly the bytes the first had
    planned. Undoing the failed run took them for its own and removed the sidecar (or put the
    photo's earlier bytes back) under the second run, whose undo then met "is gone"."""
    root, photo = _shoot_of_one(tmp_path)
    target = photo if embed else photo.with_suffix(".xmp")
    before = sha(photo)
    store, journal = open_journal(tmp_path)
    failed = _tag_run(journal, photo, 3, embed, folder_read_only=photo.parent)
    assert journal.run(failed).state == "failed" and sha(photo) == before and not photo.with_suffix(".xmp").exists()
    second = _tag_run(journal, photo, 3, embed)
    written = sha(target)
    assert not undo_run(store, journal, failed).conflicts and sha(target) == written
    assert not undo_run(store, journal, second).conflicts
    store.close()
    assert sha(photo) == before and not photo.with_suffix(".xmp").exists()


@pytest.mark.parametrize("embed", [False, True])
def test_undo_of_a_failed_run_never_puts_back_over_bytes_like_its_planned_ones(tmp_path, embed):
    """Found by the soak (nobody else touching the shoot): runs rating 3, 4, then 3 again in a
    read-only folder (failed); the 4 undone out of order puts the first run's bytes back, which
    are the very bytes the failed run had planned: undoing the failed run then "restored" its
    before, the undone 4, and the first run's undo met a conflict."""
    root, photo = _shoot_of_one(tmp_path)
    before = sha(photo)
    store, journal = open_journal(tmp_path)
    runs = [_tag_run(journal, photo, 3, embed), _tag_run(journal, photo, 4, embed),
            _tag_run(journal, photo, 3, embed, folder_read_only=photo.parent)]
    assert journal.run(runs[2]).state == "failed"
    for run_id in (runs[1], runs[2], runs[0]):
        assert not undo_run(store, journal, run_id).conflicts
    store.close()
    assert sha(photo) == before and not photo.with_suffix(".xmp").exists()


def test_undo_beneath_a_later_run_is_not_misled_by_a_failed_run_between(tmp_path):
    """Found by the machine (quiet): runs rating 3, then 4 in a read-only folder (failed), then
    5, then 4 (the very bytes the failed run had planned); the first undone out of order handed
    its way back to the failed run instead of the one that wrote on top of it, so its sidecar
    came back when the others were undone."""
    root, photo = _shoot_of_one(tmp_path)
    side = photo.with_suffix(".xmp")
    store, journal = open_journal(tmp_path)
    runs = [_tag_run(journal, photo, 3), _tag_run(journal, photo, 4, folder_read_only=photo.parent),
            _tag_run(journal, photo, 5), _tag_run(journal, photo, 4)]
    last = sha(side)
    assert not undo_run(store, journal, runs[0]).conflicts and sha(side) == last
    for run_id in reversed(runs[1:]):
        assert not undo_run(store, journal, run_id).conflicts
    store.close()
    assert not side.exists()


def test_undo_of_an_older_run_never_removes_the_same_bytes_a_later_run_wrote(tmp_path):
    """Found by the machine (quiet): `tag --overwrite` rates IMG_0006 (a new sidecar), review
    rates it 5 (the decision lands in the session's older run), `tag --overwrite` with the first
    run's stars writes the very bytes the first wrote. Undoing the first run out of order took them
    for its own and removed the sidecar; undoing the last run then met "is gone", and the review
    decision it should have put back was lost. Bytes a later run left are that run's."""
    root, photo = _shoot_of_one(tmp_path)
    side = photo.with_suffix(".xmp")
    store, journal = open_journal(tmp_path)
    writer = DecisionWriter(store.state, {"command": "review"})
    writer.decide(str(root / "IMG_0001.jpg"), [], rating=2)  # the session's run comes first
    first = _tag_run(journal, photo, 3)
    writer.decide(str(photo), [], rating=5)
    decided = side.read_bytes()
    last = _tag_run(journal, photo, 3)
    undo_run(store, journal, first)  # out of order: a conflict at most, never the later run's file
    assert side.exists()
    assert not undo_run(store, journal, last).conflicts
    store.close()
    assert side.read_bytes() == decided  # the photographer's decision is back


def test_undo_of_an_embed_run_also_restores_the_copy_a_later_copy_run_made(tmp_path):
    """Found by the machine (quiet): `tag --embed`, `move --copy` to a backup, then the tag run
    undone first: the photo got its bytes back but the backup's copy kept clipcull's rating, so
    undoing the copy run then kept the copy ("its original differs"). As for sidecars, the copy
    gets the same undo while it holds exactly what clipcull wrote."""
    root, photo = _shoot_of_one(tmp_path)
    original = sha(photo)
    store, journal = open_journal(tmp_path)
    changes, _ = tagging.plan_tags([Shot(str(photo), 0.5, "")], tagging.TagOptions(embed=True), journal)
    tag_run = tagging.apply_tags(journal, changes, {"command": "tag"})
    backup = tmp_path / "backup"
    copy_run = apply_moves(store, journal, plan_moves([Shot(str(photo), 0.5, "")], [str(root)], str(backup), copy=True),
                           {"command": "move"})
    assert sha(backup / "day2" / "IMG_0006.jpg") == sha(photo) != original
    assert not undo_run(store, journal, tag_run).conflicts
    assert sha(photo) == original == sha(backup / "day2" / "IMG_0006.jpg")
    assert not undo_run(store, journal, copy_run).conflicts
    store.close()
    assert not [p for p in backup.rglob("*") if p.is_file()] and not list(root.rglob("*.xmp"))


@pytest.mark.parametrize("embed", [False, True])
def test_undo_beneath_a_later_run_restores_the_copy_made_between(tmp_path, embed):
    """Found by the machine (quiet): `tag`, `move --copy` to a backup, `tag --overwrite` on top,
    then the first tag run undone out of order: the photo stays as the later run left it, but
    the backup's copy kept the first run's write, so undoing the copy run kept it ("its original
    is gone" / "differs")."""
    root, photo = _shoot_of_one(tmp_path)
    before = sha(photo)
    store, journal = open_journal(tmp_path)
    first = _tag_run(journal, photo, 3, embed)
    backup = tmp_path / "backup"
    copy_run = apply_moves(store, journal, plan_moves([Shot(str(photo), 0.5, "")], [str(root)], str(backup), copy=True),
                           {"command": "move"})
    second = _tag_run(journal, photo, 5, embed)
    for run_id in (first, second, copy_run):
        assert not undo_run(store, journal, run_id).conflicts
    store.close()
    assert not [p for p in backup.rglob("*") if p.is_file()]
    assert sha(photo) == before and not photo.with_suffix(".xmp").exists()


def test_a_pick_made_in_review_is_not_taken_over_by_tag_label(tmp_path):
    """Seen reading tag.py while writing the machine, and caught by its invariant 2 on the
    sequence: review picks IMG_0006 (xmp:Label Green, the photographer's), `tag --label Green`
    rates it 5 stars and, the label being the colour it writes, claimed it as its own; the next
    `tag --label Green`, where the photo is no longer a 5-star one, took the photographer's pick off."""
    exif = ExifTool()
    try:
        root, photo = _shoot_of_one(tmp_path)
        store, journal = open_journal(tmp_path)
        DecisionWriter(store.state, {"command": "review"}).decide(str(photo), [], toggle_pick=True)
        other = str(root / "IMG_0001.jpg")
        for best, worst in ((str(photo), other), (other, str(photo))):
            ranked = [Shot(best, 0.9, "aesthetic"), Shot(worst, 0.1, "not aesthetic")]
            changes, _ = tagging.plan_tags(ranked, tagging.TagOptions(thresholds=[(5, 0.5)], label="Green"), journal)
            tagging.apply_tags(journal, changes, {"command": "tag"})  # the best 5 stars, the other 1
        store.close()
        side = photo.with_suffix(".xmp")
        assert exif.read([side])[str(side)].get("Label") == "Green"
    finally:
        exif.close()


def test_undo_of_a_failed_move_run_leaves_what_a_later_move_took_there(tmp_path):
    """Found by the soak (nobody else touching the shoot): `move` with the photo's folder read-only
    (the run failed, nothing moved), `tag` rewrites the sidecar, `move` again takes photo and
    sidecar to the same places in _rejects; undoing the failed run took the photo back (the very
    file it had planned to move, same inode) but not the rewritten sidecar: photo and sidecar
    (the photographer's title, in the machine) apart until the later run was undone too."""
    root, photo = _shoot_of_one(tmp_path)
    side = photo.with_suffix(".xmp")
    store, journal = open_journal(tmp_path)
    _tag_run(journal, photo, 3)
    shot = [Shot(str(photo), 0.0, "")]
    with read_only(photo.parent):
        failed = apply_moves(store, journal, plan_moves(shot, [str(root)], None), {"command": "move"}, notes=[])
    assert journal.run(failed).state == "failed" and photo.exists() and side.exists()
    _tag_run(journal, photo, 5)  # the sidecar is a new file now
    moved = apply_moves(store, journal, plan_moves(shot, [str(root)], None), {"command": "move"})
    rejected = root / "_rejects" / "day2"
    assert not undo_run(store, journal, failed).conflicts
    assert (rejected / photo.name).exists() and (rejected / side.name).exists()  # together, as the later run left them
    assert not undo_run(store, journal, moved).conflicts
    store.close()
    assert photo.exists() and side.exists() and not (root / "_rejects").exists()


def test_undoing_every_run_newest_first_after_a_review_session_interleaved_with_tag(tmp_path):
    """Found by the machine (quiet: nobody else touched the shoot): review rates IMG_0001 1 star,
    `tag --overwrite`, review rates it again; undoing runs newest first (`clipcull undo` twice)
    meets a conflict on IMG_0001.xmp: the tag run's write lies under the review session's second
    decision, which the journal files under the older run number."""
    root, _ = _shoot_of_one(tmp_path)
    first = root / "IMG_0001.jpg"
    store, journal = open_journal(tmp_path)
    writer = DecisionWriter(store.state, {"command": "review"})
    writer.decide(str(first), [], rating=1)
    ranked = [Shot(str(first), 0.9, "aesthetic"), Shot(str(root / "day2" / "IMG_0006.jpg"), 0.1, "not aesthetic")]
    changes, _ = tagging.plan_tags(ranked, tagging.TagOptions(overwrite=True), journal)
    tagging.apply_tags(journal, changes, {"command": "tag"})
    writer.decide(str(first), [], rating=2)
    conflicts = []
    for run in journal.runs(10):  # newest first
        conflicts += undo_run(store, journal, run.id).conflicts
    store.close()
    assert not conflicts
    assert not list(root.rglob("*.xmp"))


def _decided_and_moved(tmp_path: Path, **decision):
    """A review decision on IMG_0006, then `clipcull move` takes the photo (and the sidecar) to _rejects."""
    root, photo = _shoot_of_one(tmp_path)
    store, journal = open_journal(tmp_path)
    writer = DecisionWriter(store.state, {"command": "review"})
    writer.decide(str(photo), [], **decision)
    steps = plan_moves([Shot(str(photo), 0.0, "not aesthetic")], [str(root)], None)
    move_run = apply_moves(store, journal, steps, {"command": "move"})
    return root, photo, store, journal, writer, move_run


def test_u_after_clipcull_undo_of_the_session_and_a_move(tmp_path):
    """Found by the machine: review rates a photo that has the photographer's sidecar, `clipcull
    move` takes it to _rejects, `clipcull undo` reverts the review session (the sidecar gets its
    bytes back in _rejects), then U on the still open page: undo_last finds the sidecar gone from
    where it wrote it, and marked the undone step "conflict": JournalError, a traceback on the page.
    Now U reads the step's state in the journal first and says in one line that it was undone."""
    exif = ExifTool()
    try:
        root = tmp_path / "shoot"
        photo = make_photo(root / "day2" / "IMG_0006.jpg", seed=6)
        photographers_sidecar(exif, photo.with_suffix(".xmp"))
        store, journal = open_journal(tmp_path)
        writer = DecisionWriter(store.state, {"command": "review"})
        writer.decide(str(photo), [], rating=2)
        review_run = writer.run_id
        apply_moves(store, journal, plan_moves([Shot(str(photo), 0.0, "")], [str(root)], None), {"command": "move"})
        assert not undo_run(store, journal, review_run).conflicts
        with contextlib.suppress(ReviewError):  # one line on the page would be fine
            writer.undo_last()
        store.close()
        moved = root / "_rejects" / "day2" / "IMG_0006.xmp"
        assert exif.read([moved])[str(moved)]["Rating"] == 4
    finally:
        exif.close()


def test_u_after_a_move_took_the_decided_photo_away(tmp_path):
    """Found by the machine (quiet): review clears a photo's rating (a new sidecar, xmp:Rating 0),
    `clipcull move` takes the photo and that sidecar to _rejects, U on the page: the decision is
    marked undone but stays in _rejects/day2/IMG_0006.xmp; undoing every run brings the photo
    back with a sidecar that was not there before."""
    root, photo, store, journal, writer, move_run = _decided_and_moved(tmp_path, clear=True)
    with contextlib.suppress(ReviewError):  # saying it cannot would be fine, if `clipcull undo` then can
        writer.undo_last()
    for run in journal.runs(10):  # newest first
        undo_run(store, journal, run.id)
    store.close()
    assert photo.exists() and not list(root.rglob("*.xmp"))


def test_u_after_a_later_tag_wrote_the_earlier_bytes_again(tmp_path):
    """Found by the machine (quiet): `tag` rates IMG_0006 (a new sidecar), review rejects it, `tag
    --overwrite` with the same stars as the first writes the very bytes the first wrote, U: the
    sidecar holds what it held before the decision, so U marks the decision undone and leaves the
    file; undoing the second tag run then brings the "undone" reject back for good."""
    root, photo = _shoot_of_one(tmp_path)
    store, journal = open_journal(tmp_path)
    ranked = [Shot(str(photo), 0.9, "aesthetic"), Shot(str(root / "IMG_0001.jpg"), 0.1, "not aesthetic")]
    tagging.apply_tags(journal, tagging.plan_tags(ranked, tagging.TagOptions(), journal)[0], {"command": "tag"})
    writer = DecisionWriter(store.state, {"command": "review"})
    writer.decide(str(photo), [], rating=-1)
    tagging.apply_tags(journal, tagging.plan_tags(ranked, tagging.TagOptions(overwrite=True), journal)[0], {"command": "tag"})
    with contextlib.suppress(ReviewError):
        writer.undo_last()
    conflicts = []
    for run in journal.runs(10):  # newest first
        conflicts += undo_run(store, journal, run.id).conflicts
    store.close()
    assert not conflicts and not list(root.rglob("*.xmp"))


def test_u_after_a_copy_run_copied_the_decided_sidecar(tmp_path):
    """Found by the machine (quiet): review rejects IMG_0006 (a new sidecar), `move --copy` copies
    photo and sidecar to a backup, U removes the sidecar; undoing the copy run then keeps the
    backup's copy of the sidecar for good ("its original is gone")."""
    root, photo = _shoot_of_one(tmp_path)
    store, journal = open_journal(tmp_path)
    writer = DecisionWriter(store.state, {"command": "review"})
    writer.decide(str(photo), [], rating=-1)
    backup = tmp_path / "backup"
    apply_moves(store, journal, plan_moves([Shot(str(photo), 0.0, "")], [str(root)], str(backup), copy=True),
                {"command": "move"})
    with contextlib.suppress(ReviewError):
        writer.undo_last()
    conflicts = []
    for run in journal.runs(10):  # newest first
        conflicts += undo_run(store, journal, run.id).conflicts
    store.close()
    assert not conflicts and not [p for p in backup.rglob("*") if p.is_file()]


def test_u_after_clipcull_undo_of_the_tag_run_beneath_the_decision(tmp_path):
    """Found by the soak (quiet): `tag` writes IMG_0006.xmp, review rates it 1, `clipcull
    undo` of the tag run (out of order: the sidecar stays as the decision left it, and the
    decision's way back now leads to no sidecar), then U: it restores the bytes it remembers from
    before the decision, the undone tag run's, and marks the decision undone; undoing every run
    leaves that sidecar."""
    root, photo = _shoot_of_one(tmp_path)
    store, journal = open_journal(tmp_path)
    tag_run = _tag_run(journal, photo, 3)
    writer = DecisionWriter(store.state, {"command": "review"})
    writer.decide(str(photo), [], rating=1)
    assert not undo_run(store, journal, tag_run).conflicts
    with contextlib.suppress(ReviewError):
        writer.undo_last()
    for run in journal.runs(10):
        undo_run(store, journal, run.id)
    store.close()
    assert not list(root.rglob("*.xmp"))


def test_a_decision_equal_to_clipculls_rating_is_kept_by_the_next_tag(tmp_path):
    """Found by the soak: review rates IMG_0006 1 (the session's run), `tag --overwrite` rates it
    3, review rates it 3 (the photographer's now: the review step claims nothing), `tag` without
    --overwrite: the journal, ordering writes by run number, found the tag run's write the last
    one there, took the 3 for clipcull's own and replaced the photographer's decision. Writes are
    now ordered as they were journaled (and clipcull's marker keyword must be there too)."""
    exif = ExifTool()
    try:
        root, photo = _shoot_of_one(tmp_path)
        store, journal = open_journal(tmp_path)
        writer = DecisionWriter(store.state, {"command": "review"})
        writer.decide(str(photo), [], rating=1)
        _tag_run(journal, photo, 3)  # --overwrite
        writer.decide(str(photo), [], rating=3)
        changes, _ = tagging.plan_tags([Shot(str(photo), 0.5, "")], tagging.TagOptions(thresholds=[(1, -1e9)]), journal)
        tagging.apply_tags(journal, changes, {"command": "tag"})
        store.close()
        side = photo.with_suffix(".xmp")
        assert exif.read([side])[str(side)]["Rating"] == 3
    finally:
        exif.close()
