"""The one writer of XMP: every change clipcull makes to a sidecar or to a photo's own XMP, and
every undo of such a change, goes through here. `tag`, `tag --embed`, review's decisions and
`undo` all use it, so they share one set of rules:

- naming: the sidecar of a photo is found the same way everywhere (`IMG_0001.XMP` is the same
  sidecar as `IMG_0001.xmp`, never a second one beside it);
- nothing is written that was not read completely (xmp.Packet refuses a packet exiv2 read only in
  part), and nothing is written over bytes other than those planned from (another program that
  wrote meanwhile keeps its edit);
- a symbolic link is never replaced, nor written through; a photo with several hard links is not
  split; mode, extended attributes and owner are kept (fileops.write_atomic);
- every write is journaled before it happens, with what it claims (`owned`): the rating and label
  clipcull set. A value is clipcull's only while it is exactly what the journal says clipcull last
  wrote there (see `claims_now`); any other value is the photographer's.
- a photo's own XMP is undone to its exact previous bytes (`patch`), not by writing the old
  packet back through exiv2.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from clip_cull.culling.fileops import name_too_long, write_atomic
from clip_cull.culling.interrupt import whole_step
from clip_cull.culling.journal import DONE, FAILED, Journal, Step
from clip_cull.culling.xmp import (LABELLED_KEYWORD, RATED_KEYWORD, XmpError, XmpFields, existing_sidecars, merge,
                                   parse, read_xmp_file, sidecar_path)
from clip_cull.core.files import HEIF_EXTENSIONS, PHOTO_EXTENSIONS, RAW_EXTENSIONS, content_fingerprint

RATING, LABEL = "rating", "label"  # the fields a write can claim

# Errors that concern one file or folder (a read-only folder, no permission, a name too long):
# that file is one line and the run goes on. Anything else (a full disk) stops the run.
THIS_FILE_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOENT,
                  errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EEXIST}


class ChangedSincePlan(Exception):
    """The file is no longer what the plan read: someone else wrote it meanwhile."""


@dataclass
class Edit:
    """What one write sets. None leaves a field as it is."""

    rating: int | None = None
    label: str | None = None
    drop_label: bool = False
    keywords: list[str] = field(default_factory=list)  # clipcull:* entries of dc:subject after the write
    owned: dict = field(default_factory=dict)  # what clipcull claims after it ({"rating": "3"}); {}: the photographer's


@dataclass
class XmpChange:
    """One planned write: a sidecar, or the XMP inside a photo (action "embedded")."""

    photo: str
    sidecar: Path  # the file written: the sidecar, or the photo itself for "embedded"
    before: bytes | None
    after: bytes | None  # None: nothing to write (kept, unchanged, or left alone)
    rating: int | None = None
    note: str = ""  # why nothing is written, or what happens
    problem: bool = False  # left alone because it cannot be read or written safely: said on stderr
    action: str = "sidecar"
    after_sha: str | None = None  # embedded: sha256 of the photo as it will be written
    source_sha: str | None = None  # embedded: sha256 of the photo as planned
    owned: dict = field(default_factory=dict)
    patch: dict | None = None  # embedded: how to get the exact previous bytes back
    edit: Edit | None = None  # embedded: recomputed from this at write time
    written: bool = False  # set once the file is written and journaled

    @property
    def writes(self) -> bool:
        return self.after is not None or self.after_sha is not None


# --- where ------------------------------------------------------------------------------------


def target_sidecar(photo: str, style: str, listings: dict | None = None) -> Path:
    """The sidecar to write: the style's naming, or the one that exists under it with .XMP."""
    wanted = sidecar_path(photo, style)
    names = None if listings is None else listings.get(str(Path(photo).parent))
    for existing in existing_sidecars(photo, names=names):
        if existing.name.lower() == wanted.name.lower() and existing.name[:-4] == wanted.name[:-4]:
            return existing
    return wanted


def shared_sidecar(photo: str, companions: list[str] = (), style: str = "lightroom",
                   listings: dict | None = None) -> tuple[Path, str] | None:
    """(the sidecar, one line) when a sidecar this photo's decision would go to is also another
    photo's: A.jpg and A.png share A.xmp under Lightroom's naming, and a rating written there for
    one is read as the other's too. Only a RAW+JPEG set (the photo and its companions) is one photo
    with one sidecar. None when every sidecar is this photo's alone. `listings`: folder -> its
    entries, as target_sidecar takes them."""
    members = [photo, *companions]
    own = {os.path.abspath(m) for m in members}
    for member in members:
        path = target_sidecar(member, style, listings)
        folder = str(Path(member).parent)  # as target_sidecar keys `listings`
        names = listings.get(folder) if listings is not None else None
        if names is None:
            from clip_cull.culling.xmp import _list_folder

            names = _list_folder(Path(folder))
            if listings is not None:
                listings[folder] = names
        mine, stem = os.path.basename(member), os.path.splitext(os.path.basename(member))[0].lower()
        for name in sorted(names):
            base, ext = os.path.splitext(name)
            if base.lower() != stem or ext.lower() not in _ALL_PHOTOS:
                continue
            other = str(Path(folder) / name)
            if os.path.abspath(other) in own or not os.path.isfile(other):
                continue
            if target_sidecar(other, style, listings) == path:
                return path, (f"{mine} and {name} share the sidecar {path.name} (a decision written there is read "
                              f"as both photos'); not written. --sidecar darktable gives each photo its own "
                              f"({mine}.xmp, {name}.xmp)")
    return None


_ALL_PHOTOS = PHOTO_EXTENSIONS | HEIF_EXTENSIONS | RAW_EXTENSIONS


# --- whose values -----------------------------------------------------------------------------


def claims_now(journal: Journal | None, path: str | Path, fields: XmpFields | None, data: bytes | None) -> dict:
    """The fields at `path` (a sidecar, or a photo for its own XMP) that are clipcull's: those whose
    value now is exactly what clipcull's journal says it last wrote there. Everything else is the
    photographer's (or another program's). Without a journal nothing is clipcull's."""
    if journal is None or fields is None:
        return {}
    step = journal.last_write(str(path))
    if step is None:
        return {}
    claimed = step.owned if step.owned is not None else _legacy_claims(step, path, fields, data)
    now = {RATING: fields.rating_text, LABEL: fields.label}
    # clipcull writes its marker keyword with every value it claims. Without it, the file is not
    # the one clipcull wrote (a new photo's sidecar under a reused name, IMG_0001 after the
    # camera's counter wrapped, rated 3 by the photographer where clipcull once wrote 3), or the
    # photographer took clipcull's keywords off: either way the value is theirs. The keyword is
    # never enough on its own (the journal decides); it is needed.
    marked = {RATING: RATED_KEYWORD in fields.keywords, LABEL: LABELLED_KEYWORD in fields.keywords}
    return {name: value for name, value in claimed.items() if name in now and now[name] == value and marked[name]}


def _legacy_claims(step: Step, path, fields: XmpFields, data: bytes | None) -> dict:
    """A write journaled by a clipcull that recorded no claims: its rating (and a label it marked)
    are clipcull's only while the file is still exactly what it wrote."""
    if step.action == "embedded":
        try:
            with open(path, "rb") as f:
                untouched = content_fingerprint(f.read()) == step.after_sha
        except OSError:
            return {}
    else:
        untouched = data is not None and content_fingerprint(data) == step.after_sha
    if not untouched or RATED_KEYWORD not in fields.keywords:
        return {}
    claims = {RATING: fields.rating_text}
    if LABELLED_KEYWORD in fields.keywords:
        claims[LABEL] = fields.label
    return claims


# --- planning ---------------------------------------------------------------------------------


def read_current(path: Path) -> bytes | None:
    """A sidecar's bytes, None where there is none. A link or anything but a regular file raises
    XmpError: clipcull never writes through it or over it."""
    if not os.path.lexists(path):
        return None
    if os.path.islink(path):
        raise XmpError("is a symbolic link; clipcull does not write through links")
    return read_xmp_file(path)


def plan_sidecar(photo: str, path: Path, edit: Edit, rating: int | None = None, claims: dict | None = None) -> XmpChange:
    """The sidecar at `path` with `edit` merged in, worked out now and written later only over the
    same bytes. Left alone (problem, with the reason) when it cannot be read completely. `claims`:
    what clipcull claims there now (claims_now); when the edit changes whose the values are but no
    byte, the same bytes are written, so that the journal records the new owner."""
    if name_too_long(path):  # a photo's name near the limit, and the sidecar's adds to it
        return XmpChange(photo, path, None, None, rating, f"left alone: a name of {len(os.fsencode(path.name))} "
                         f"bytes is more than the file system allows; no sidecar can have it", True)
    try:
        before = read_current(path)
    except XmpError as e:
        return XmpChange(photo, path, None, None, rating, f"left alone: {e}", True)
    try:
        after = merge(before, edit.rating, edit.label, edit.keywords, edit.drop_label)
    except XmpError as e:
        return XmpChange(photo, path, before, None, rating, f"left alone: {e}", True)
    if before is not None and parse(before).properties() == parse(after).properties():
        if claims is None or claims == edit.owned:
            return XmpChange(photo, path, before, None, rating, "unchanged", owned=edit.owned)
        # The photographer pressed the very value clipcull wrote: it is theirs now, journaled as such
        return XmpChange(photo, path, before, before, rating, "merge", owned=edit.owned)
    return XmpChange(photo, path, before, after, rating, "create" if before is None else "merge", owned=edit.owned)


def plan_embedded(photo: str, edit: Edit, rating: int | None = None) -> XmpChange:
    """The photo's own XMP with `edit` merged in (pixels checked identical), written later from the
    same bytes. A link, a file with several hard links, or a format exiv2 cannot write is left."""
    from clip_cull.culling.embedded import can_embed, current_packet, embed_rating

    change = XmpChange(photo, Path(photo), None, None, rating, "embed", action="embedded", owned=edit.owned, edit=edit)
    if not can_embed(photo):
        change.note = "not embedded: clipcull writes XMP into JPEG, TIFF and DNG only (the sidecar has the rating)"
        return change
    why = _not_writable_in_place(photo)
    if why:
        change.note, change.problem = f"not embedded: {why} (the sidecar has the rating)", True
        return change
    try:
        data = Path(photo).read_bytes()
        packet, new = embed_rating(photo, data, edit.rating, edit.keywords, edit.label, edit.drop_label)
    except (OSError, XmpError) as e:
        change.note, change.problem = f"not embedded: {getattr(e, 'strerror', None) or e}", True
        return change
    if packet.strip() and parse(packet).properties() == parse(current_packet(new)).properties():
        change.note = "unchanged"
        return change
    change.source_sha, change.after_sha = content_fingerprint(data), content_fingerprint(new)
    change.before, change.patch = difference(data, new)
    return change


def _not_writable_in_place(photo: str) -> str | None:
    try:
        st = os.lstat(photo)
    except OSError as e:
        return e.strerror or str(e)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link; clipcull never replaces a link with a copy"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_nlink > 1:
        return f"it has {st.st_nlink} hard links; writing would split them into different photos"
    # A photo without write permission is its owner's "leave it alone" (root may write it all the same)
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(photo, os.W_OK):
        return "it is read-only (no write permission), so clipcull leaves it alone"
    return None


# --- exact bytes back -------------------------------------------------------------------------


def difference(old: bytes, new: bytes) -> tuple[bytes, dict]:
    """(the bytes of `old` that `new` does not share at its start and end, how to put them back).
    exiv2 rewrites the metadata at the start of a JPEG and leaves the image data as it was, so
    what the journal keeps is a few kilobytes, not the photo."""
    head = _common_prefix(old, new)
    tail = _common_suffix(old, new, min(len(old), len(new)) - head)
    return old[head:len(old) - tail], {"head": head, "tail": tail, "before_sha": content_fingerprint(old)}


def restored(current: bytes, middle: bytes, patch: dict) -> bytes:
    """The previous bytes from the present ones and the journal's difference; XmpError when they
    do not come out as they were (sha256)."""
    head, tail = patch["head"], patch["tail"]
    if head + tail > len(current):
        raise XmpError("its previous bytes could not be rebuilt exactly; left as it is")
    old = current[:head] + middle + current[len(current) - tail:]
    if content_fingerprint(old) != patch["before_sha"]:
        raise XmpError("its previous bytes could not be rebuilt exactly; left as it is")
    return old


_BLOCK = 1 << 16  # compared a block at a time, then byte by byte within the first block that differs


def _common_prefix(a: bytes, b: bytes) -> int:
    n, i = min(len(a), len(b)), 0
    while i + _BLOCK <= n and a[i:i + _BLOCK] == b[i:i + _BLOCK]:
        i += _BLOCK
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """How many bytes a and b share at their end, at most limit."""
    la, lb, i = len(a), len(b), 0
    while i + _BLOCK <= limit and a[la - i - _BLOCK:la - i] == b[lb - i - _BLOCK:lb - i]:
        i += _BLOCK
    while i < limit and a[la - 1 - i] == b[lb - 1 - i]:
        i += 1
    return i


# --- writing ----------------------------------------------------------------------------------


def steps_for(changes: list[XmpChange]) -> list[Step]:
    """The journal's steps for these writes (planned before anything is written)."""
    steps = []
    for c in changes:
        if c.action == "embedded":
            steps.append(Step("embedded", c.photo, str(c.sidecar), c.before, c.after_sha, owned=c.owned, patch=c.patch))
        else:
            steps.append(Step("sidecar", c.photo, str(c.sidecar), c.before, content_fingerprint(c.after), owned=c.owned))
    return steps


def apply_changes(journal: Journal, run_id: int, steps: list[Step], changes: list[XmpChange],
                  notes: list[str]) -> int:
    """Write each change, journaled in `steps` already, marking each done; returns how many were
    not written. A file changed since the plan, or one that cannot be written for its own reason,
    is marked failed with a line in `notes` (and on the change); anything else (a full disk)
    marks the step failed and propagates. The caller holds journal.exclusive()."""
    skipped = 0
    for step, change in zip(steps, changes):
        with whole_step():  # Ctrl-C waits for the write and its mark: the journal knows every write
            skipped += not _write_one(journal, run_id, step, change, notes)
    return skipped


def _write_one(journal: Journal, run_id: int, step: Step, change: XmpChange, notes: list[str]) -> bool:
    """Write one file and journal it; True when it is written."""
    try:
        write(change)
    except (ChangedSincePlan, OSError) as e:
        if isinstance(e, OSError) and e.errno not in THIS_FILE_ONLY:
            journal.mark(run_id, step.seq, FAILED, str(e))  # a full disk, an I/O error: stop
            raise
        why = str(e) if isinstance(e, ChangedSincePlan) else f"{change.sidecar}: {e.strerror or e}; not written"
        journal.mark(run_id, step.seq, FAILED, why)
        change.note, change.problem = why, True
        notes.append(why)
        return False
    except BaseException as e:  # nothing of this step was written (the write is atomic)
        journal.mark(run_id, step.seq, FAILED, str(e) or type(e).__name__)
        raise
    journal.mark(run_id, step.seq, DONE)
    change.written = True
    return True


def write(change: XmpChange) -> None:
    """Write one planned change atomically, only over the very bytes it was planned from."""
    if change.action == "embedded":
        _write_embedded(change)
    else:
        _write_sidecar(change)


def _write_sidecar(change: XmpChange) -> None:
    path = Path(change.sidecar)
    if not os.path.lexists(change.photo):  # a `move` meanwhile: no sidecar left behind alone
        raise ChangedSincePlan(f"{change.photo} is gone since the plan (moved?); {path.name} was not written")
    if change.before is None:
        if os.path.lexists(path):
            raise ChangedSincePlan(f"{path} was created by another program since the plan; left as it is")
    else:
        try:
            st = os.lstat(path)
            now = read_xmp_file(path) if stat.S_ISREG(st.st_mode) else None
        except (OSError, XmpError):
            now = None
        if now != change.before:
            raise ChangedSincePlan(f"{path} changed since the plan; left as it is")
    write_atomic(path, change.after)


def _write_embedded(change: XmpChange) -> None:
    """Recompute from the photo's bytes, which must be those planned, and write atomically."""
    from clip_cull.culling.embedded import embed_rating

    why = _not_writable_in_place(str(change.sidecar))
    if why:
        raise ChangedSincePlan(f"{change.sidecar}: {why}; its XMP was not written")
    data = Path(change.sidecar).read_bytes()
    if content_fingerprint(data) != change.source_sha:
        raise ChangedSincePlan(f"{change.sidecar} changed since the plan; its XMP was not written")
    _, new = embed_rating(change.photo, data, change.edit.rating, change.edit.keywords, change.edit.label,
                          change.edit.drop_label)
    if content_fingerprint(new) != change.after_sha:
        raise OSError(f"{change.sidecar}: exiv2 wrote something other than planned; not written")
    write_atomic(change.sidecar, new)


# --- undo -------------------------------------------------------------------------------------


def restore_sidecar(where: str, before: bytes | None, before_mode: int | None) -> None:
    """Put a sidecar back as it was before clipcull wrote it (nothing: it goes). The caller has
    checked that `where` holds exactly what clipcull wrote."""
    if before is None:
        os.unlink(where)
    else:
        write_atomic(where, before, mode=before_mode)


def restore_embedded(where: str, step: Step) -> str | None:
    """Put a photo back to its exact bytes before `tag --embed` wrote into it. None when done,
    else the reason it was left as it is (never an exception: undo goes on)."""
    try:
        why = _not_writable_in_place(where)
        if why:
            return f"{where}: {why}; its previous XMP was not put back"
        with open(where, "rb") as f:
            current = f.read()
    except OSError as e:
        return f"{where} cannot be read ({e.strerror or e}); its previous XMP was not put back"
    if content_fingerprint(current) != step.after_sha:
        return f"{where} changed since clipcull wrote its rating into it; left as it is"
    try:
        if step.patch is not None:
            previous = restored(current, step.before or b"", step.patch)
        else:  # journaled by an older clipcull: the previous packet, written back through exiv2
            from clip_cull.culling.embedded import NO_PACKET, with_packet

            previous = with_packet(where, current, step.before or NO_PACKET)
    except XmpError as e:
        return f"{where}: {e}; left as it is"
    except Exception as e:  # exiv2's own errors on a packet it cannot take back: one line, undo goes on
        return f"{where}: its previous XMP cannot be put back ({e}); left as it is"
    write_atomic(where, previous)
    return None
