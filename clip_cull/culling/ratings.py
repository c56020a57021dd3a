"""The photographer's rating of a photo, looked for everywhere it can be.

Sources, in this order (the first that holds a photographer's rating wins):
  1. the photo's sidecars: Lightroom naming (IMG_0001.xmp), then darktable's (IMG_0001.JPG.xmp),
     .XMP in any case;
  2. the sidecars of its RAW companions (darktable users rate the RAW of a RAW+JPEG pair);
  3. the XMP embedded in the photo;
  4. the XMP embedded in its RAW companions.
Sidecars come before embedded XMP because a sidecar is what a cataloguing program writes when the
photographer rates (an embedded rating is often the camera's or an older export's).

Not a photographer's rating, so looked past: a rating clipcull wrote, by its journal (the value is
exactly what clipcull last wrote there; see writer.claims_now: a keyword proves nothing, since the
photographer may re-rate a photo clipcull rated), and darktable's import default (xmp:Rating 1 in
a darktable sidecar) unless darktable_default_counts. A value that is no rating at all ("abc",
"1e999") is someone's all the same: `odd` holds it, and tag keeps it.
An explicit 0 is "unrated by choice": it wins like any rating (the photo counts as unrated).
The colour label is looked for in the same places, in the same order (`label`): review shows the
photographer's decision as this reader finds it, so what the page shows is what tag keeps.
When two sources hold different photographer's ratings, `disagreement` says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clip_cull.culling.embedded import embedded_packets
from clip_cull.culling.writer import RATING, claims_now
from clip_cull.culling.xmp import XmpError, parse, rating_sidecars, read_xmp_file

DARKTABLE_DEFAULT_RATING = 1
EMBEDDED = "XMP embedded in "


@dataclass
class Finding:
    rating: int | None = None  # -1 reject, 0 unrated by choice, 1-5 stars; None: none found
    source: str | None = None
    disagreement: str | None = None  # one line, when two sources disagree
    problems: list[tuple[str, str]] = field(default_factory=list)  # (sidecar, why it cannot be read)
    odd: str | None = None  # an xmp:Rating someone set that is not a number clipcull understands
    written: int | None = None  # the winning rating as written there (7, -5: out of range; `rating` holds 5, -1)
    label: str | None = None  # xmp:Label: the first source holding one (clipcull's tag --label included)
    label_source: str | None = None


def find_rating(photo: str, companions: list[str] = (), darktable_default_counts: bool = False,
                listings: dict | None = None, journal=None) -> Finding:
    """The photographer's rating of `photo` (with its RAW companions), and what else was seen.
    `listings`: folder -> its entries, to list each folder once over many photos. `journal`: the
    journal that says which values clipcull wrote (None: every value is the photographer's)."""
    finding = Finding()
    found: list[tuple[int, str]] = []
    for source, where, data, problem in _sources(photo, list(companions), listings):
        try:
            if problem:
                raise XmpError(problem)
            fields = parse(data).fields()
        except XmpError as e:
            if not source.startswith(EMBEDDED):  # a photo's own odd XMP is not worth a line
                finding.problems.append((source, str(e)))
            continue
        claims = claims_now(journal, where, fields, data)
        if fields.label is not None and finding.label_source is None:
            # the same order as the rating; clipcull's own label (tag --label) too: Lightroom reads
            # it as a pick or a colour like any other, so a reject must take it off as well
            finding.label, finding.label_source = fields.label, source
        if fields.rating_text is None or RATING in claims:
            continue  # no rating, or exactly the one clipcull wrote there
        rating = _photographers_rating(fields, darktable_default_counts)
        if rating is not None:
            found.append((rating, source))
            if len(found) == 1:
                finding.written = fields.rating
        elif fields.rating is None and finding.odd is None:
            finding.odd, finding.source = fields.rating_text, source
    if found:
        finding.rating, finding.source = found[0]
        others = [(r, s) for r, s in found[1:] if r != finding.rating]
        if others:
            finding.disagreement = (f"{photo}: your ratings disagree: {finding.rating} in {finding.source}, "
                                    f"{others[0][0]} in {others[0][1]}; {finding.rating} counts "
                                    f"(the photo's sidecars, then its RAW's, then embedded XMP)")
    return finding


def _sources(photo: str, companions: list[str], listings: dict | None):
    """(where, packet bytes, problem) for every place a rating can be, in order of precedence."""
    members = [photo, *companions]
    seen = set()
    for member in members:
        for sidecar in rating_sidecars(member, names=_names(member, listings)):
            key = _identity(sidecar)
            if key in seen:  # IMG_0001.xmp is shared by IMG_0001.jpg and IMG_0001.CR2
                continue
            seen.add(key)
            try:
                yield str(sidecar), str(sidecar), read_xmp_file(sidecar), None
            except XmpError as e:
                yield str(sidecar), str(sidecar), None, str(e)
    for member in members:
        # A JPEG with several XMP segments: each is a source, the last first (as exiftool reads it)
        for packet in reversed(embedded_packets(member)):
            yield f"{EMBEDDED}{Path(member).name}", member, packet, None


def _photographers_rating(fields, darktable_default_counts: bool) -> int | None:
    if fields.rating is None:
        return None
    if fields.darktable and fields.rating == DARKTABLE_DEFAULT_RATING and not darktable_default_counts:
        return None
    return max(-1, min(5, fields.rating))


def _names(member: str, listings: dict | None):
    if listings is None:
        return None
    folder = str(Path(member).parent)
    if folder not in listings:
        from clip_cull.culling.xmp import _list_folder

        listings[folder] = _list_folder(Path(folder))
    return listings[folder]


def _identity(path: Path):
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        return str(path)
