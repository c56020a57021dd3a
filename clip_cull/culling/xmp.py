"""XMP sidecars that Lightroom, darktable, digiKam and exiftool read, merged without harm.

clipcull owns three things in a sidecar: `xmp:Rating`, `xmp:Label` (only with `tag --label`) and
the `clipcull:*` entries of `dc:subject`. Sidecars are read and written with libexiv2 (through
python-exiv2), the XMP library darktable and digiKam use, so the file is parsed as RDF, not as
text: prefixes are resolved to namespaces (`xap:Rating` is `xmp:Rating`), attribute and element
forms are one property, comments are not data. exiv2 writes the packet anew (its own layout, every
prefix bound); before a merge is accepted it is parsed back and every property another tool wrote
must be there with the same value, else the sidecar is left alone.

Before exiv2 sees anything, the text is checked cheaply: at most MAX_XMP_BYTES, UTF-8 (a UTF-16
or UTF-32 sidecar with a byte-order mark is read, never written), no DOCTYPE (so no external
entities and no entity expansion), well-formed XML with every prefix bound.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import threading
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

from clip_cull.core.files import NotRegularFile, open_regular

XMP_NS = "http://ns.adobe.com/xap/1.0/"
DC_NS = "http://purl.org/dc/elements/1.1/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DARKTABLE_NS = "http://darktable.sf.net/"
KEYWORD_PREFIX = "clipcull:"
RATED_KEYWORD = "clipcull:rated"  # marks ratings clipcull wrote, so it never mistakes them for the photographer's
LABELLED_KEYWORD = "clipcull:labelled"  # marks a colour label clipcull wrote (tag --label)
SIDECAR_STYLES = ("lightroom", "darktable")
MAX_XMP_BYTES = 8 << 20  # darktable sidecars with long histories are a few hundred KB

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_BOMS = (("\ufeff".encode("utf-32-le"), "utf-32"), ("\ufeff".encode("utf-32-be"), "utf-32"),
         (b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
_XML_PREFIX_DECLARATION = re.compile(r'\s+xmlns:xml="[^"]*"')
_DECLARATION = re.compile(r"\A\s*<\?xml[^>]{0,200}\?>")


class XmpError(Exception):
    """The sidecar is not XMP clipcull can read or edit safely; the message says why."""


# --- where sidecars are ------------------------------------------------------------------------


def sidecar_path(photo: str | Path, style: str = "lightroom") -> Path:
    """Lightroom and Capture One: IMG_0001.xmp; darktable and digiKam: IMG_0001.JPG.xmp."""
    photo = Path(photo)
    if style == "darktable":
        return photo.with_name(photo.name + ".xmp")
    if style == "lightroom":
        return photo.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar style {style!r}")


def existing_sidecars(photo: str | Path, *, names: list[str] | None = None) -> list[Path]:
    """Every sidecar a photo has: IMG_0001.xmp (Lightroom), IMG_0001.JPG.xmp (darktable,
    digiKam), either with .XMP in any case, and darktable's duplicates IMG_0001_01.JPG.xmp.
    Regular files and symbolic links count (directories, FIFOs and the like do not; a link is
    never followed here). Primary namings first. `names`: the folder's entries, when the caller
    has listed it already."""
    return [path for _, path in _sidecars(Path(photo), names)]


def rating_sidecars(photo: str | Path, *, names: list[str] | None = None) -> list[Path]:
    """The sidecars that hold this photo's own rating: Lightroom's naming, then darktable's, not
    the duplicates (a darktable duplicate is another version of the photo, rated on its own)."""
    return [path for rank, path in _sidecars(Path(photo), names) if rank < 2]


def unusual_sidecars(photo: str | Path, *, names: list[str] | None = None) -> list[Path]:
    """Entries named like this photo's sidecars that are neither files nor links (a folder, a
    FIFO, a socket, a device): never opened, never moved; callers say so in a line."""
    return [path for _, path in _sidecars(Path(photo), names, usual=False)]


def _sidecars(photo: Path, names: list[str] | None, usual: bool = True) -> list[tuple[int, Path]]:
    if names is None:
        names = _list_folder(photo.parent)
    primary = {photo.stem: 0, photo.name: 1}
    duplicate = re.compile(re.escape(photo.stem) + r"_\d{1,4}" + re.escape(photo.suffix), re.I)
    found = []
    for name in names:
        base, ext = name[:-4], name[-4:]
        if ext.lower() != ".xmp" or not base:
            continue
        rank = primary.get(base)
        if rank is None and duplicate.fullmatch(base) and base.startswith(photo.stem):
            rank = 2
        if rank is not None and _is_file_or_link(photo.parent / name) == usual:
            found.append((rank, name))
    return [(rank, photo.parent / name) for rank, name in sorted(found)]


def _list_folder(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries]
    except OSError:
        return []


def _is_file_or_link(path: Path) -> bool | None:
    """True for a regular file or a link, False for anything else there, None when nothing is."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


# --- reading a sidecar safely ------------------------------------------------------------------


def read_xmp_file(path: str | Path) -> bytes:
    """A sidecar's bytes. Only a regular file (a link to one is read), at most MAX_XMP_BYTES;
    a directory, FIFO, device or socket is never opened (a FIFO would block forever)."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise XmpError(f"cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(info.st_mode):
        raise XmpError("is not a regular file" + (" (a folder)" if stat.S_ISDIR(info.st_mode) else ""))
    if info.st_size > MAX_XMP_BYTES:
        raise XmpError(f"is {info.st_size} bytes, over the {MAX_XMP_BYTES}-byte limit for XMP")
    try:
        fd, _ = open_regular(path)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_XMP_BYTES + 1)
    except NotRegularFile:  # swapped for something else since the stat above
        raise XmpError("is not a regular file") from None
    except OSError as e:
        raise XmpError(f"cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_XMP_BYTES:
        raise XmpError(f"is over the {MAX_XMP_BYTES}-byte limit for XMP")
    return data


def decode_text(data: bytes) -> tuple[str, bool]:
    """(text, transcoded): UTF-8, or UTF-16/UTF-32 with a byte-order mark (legal XMP, read but
    never written back: clipcull writes UTF-8 only)."""
    if len(data) > MAX_XMP_BYTES:
        raise XmpError(f"is over the {MAX_XMP_BYTES}-byte limit for XMP")
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), codec not in ("utf-8-sig",)
            except UnicodeDecodeError:
                raise XmpError(f"is not valid {codec.upper()} text") from None
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        raise XmpError("is not UTF-8 text (nor UTF-16/32 with a byte-order mark)") from None


def check_xml(text: str) -> bool:
    """Refuse DOCTYPEs (external entities, entity expansion) before any parser expands them, then
    require well-formed XML with every prefix bound and an rdf:RDF element. Returns False for a
    file of nothing but whitespace (a zero-byte sidecar, `touch IMG_0001.xmp`): no properties to
    keep, so it is written as a new sidecar (undo puts the empty file back). An x:xmpmeta without
    rdf:RDF is not an XMP serialization (XMP part 1, 7.3) and is refused."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise XmpError("declares a DOCTYPE or entities; refused (XMP has none)")
    body = _DECLARATION.sub("", text, count=1)
    if not body.strip(" \t\r\n\ufeff"):
        return False
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    seen = {"rdf": False}

    def start(name, _attrs):
        if name == f"{RDF_NS} RDF":
            seen["rdf"] = True

    def no_doctype(*_args):
        raise XmpError("declares a DOCTYPE; refused")

    parser.StartElementHandler = start
    parser.StartDoctypeDeclHandler = no_doctype
    parser.EntityDeclHandler = no_doctype
    try:
        parser.Parse(body.encode("utf-8"), True)
    except xml.parsers.expat.ExpatError as e:
        raise XmpError(f"is not well-formed XML ({xml.parsers.expat.errors.messages.get(e.code, e)}, line {e.lineno})") from None
    if not seen["rdf"]:
        raise XmpError("has no rdf:RDF element")
    return True


# --- exiv2 ---------------------------------------------------------------------------------------

_exiv2_lock = threading.Lock()
_exiv2_module = None


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


_collector = _Collect()


def _exiv2():
    """python-exiv2, imported on first use (commands that never touch XMP do not pay for it), its
    log routed to a collector so that exiv2's complaints become the reason on one line."""
    global _exiv2_module
    if _exiv2_module is None:
        try:
            import exiv2
        except ImportError as e:  # pragma: no cover - a dependency
            raise XmpError(f"python-exiv2 is not installed ({e}); pip install exiv2") from None
        exiv2.XmpParser.initialize()
        exiv2.LogMsg.setHandler(exiv2.pythonHandler)
        exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.warn)
        logger = logging.getLogger("exiv2")
        logger.addHandler(_collector)
        logger.propagate = False
        # Its own level, so that whatever the application does to the root logger (the CLI sets
        # it to CRITICAL) exiv2's warnings still reach the collector: a packet exiv2 read only in
        # part must be refused, never taken for an empty one and written over.
        logger.setLevel(logging.WARNING)
        _exiv2_module = exiv2
    return _exiv2_module


@dataclass
class XmpFields:
    rating: int | None = None  # None: no xmp:Rating, or not a finite number
    label: str | None = None
    keywords: list[str] = field(default_factory=list)
    darktable: bool = False  # darktable wrote it (its namespace is there)
    rating_text: str | None = None  # xmp:Rating as written ("7", "1e999", "abc"): someone's value all the same


class Packet:
    """One parsed XMP packet: its properties, held by exiv2."""

    def __init__(self, data: bytes | None):
        exiv2 = _exiv2()
        self.transcoded = False
        if data is None:
            self.xmp = exiv2.XmpData()
            return
        text, self.transcoded = decode_text(data)
        if not check_xml(text):  # an empty file: no properties, an empty packet written anew
            self.xmp = exiv2.XmpData()
            return
        if self.transcoded:
            text = _DECLARATION.sub("", text, count=1)
        self._buffer = text.lstrip().encode("utf-8")  # exiv2 reads from this buffer: keep it alive
        with _exiv2_lock:
            _collector.messages.clear()
            # exiv2 keeps one process-wide prefix -> namespace table, filled by every packet it
            # reads: one sidecar binding `lr` to another namespace made the next sidecar's
            # Lightroom keywords come out under that namespace (and a later `foo` bound
            # elsewhere was refused). Each packet is read with exiv2's own table only.
            exiv2.XmpProperties.unregisterNs()
            try:
                image = exiv2.ImageFactory.open(self._buffer)
                image.readMetadata()
            except exiv2.Exiv2Error as e:
                raise XmpError(f"exiv2 cannot read it ({e.args[-1] if e.args else e})") from None
            problems = list(_collector.messages)
        if problems:
            raise XmpError(f"exiv2 cannot read it ({problems[0]})")
        self._image = image
        self.xmp = image.xmpData()
        _check_complete(xml_properties(self._buffer), self.properties())

    def properties(self) -> dict[str, tuple[str, str]]:
        """Every property, by exiv2 key: (type, value as text)."""
        return {d.key(): (d.typeName(), str(d.value())) for d in self.xmp}

    def _items(self, key: str) -> list[str] | None:
        found = [d for d in self.xmp if d.key() == key]
        if not found:
            return None
        value = found[0]
        return [value.toString(i) for i in range(value.count())]

    def _text(self, key: str) -> str | None:
        found = [d for d in self.xmp if d.key() == key]
        return str(found[0].value()) if found else None

    def fields(self) -> XmpFields:
        keys = [d.key() for d in self.xmp]
        rating = self._text("Xmp.xmp.Rating")
        return XmpFields(_int(rating), self._text("Xmp.xmp.Label"), self._items("Xmp.dc.subject") or [],
                         any(k.startswith("Xmp.darktable.") for k in keys), rating)

    def set_text(self, key: str, value: str | None) -> None:
        if value is None:
            if key in self.xmp:
                del self.xmp[key]
        else:
            self.xmp[key] = value

    def set_keywords(self, keywords: list[str]) -> None:
        """clipcull:* entries of dc:subject replaced by `keywords`; everyone else's stay, in order."""
        current = self._items("Xmp.dc.subject")
        theirs = [k for k in (current or []) if not k.startswith(KEYWORD_PREFIX)]
        wanted = theirs + list(keywords)
        if wanted == (current or []):
            return
        if not wanted and current and not theirs:
            del self.xmp["Xmp.dc.subject"]  # only clipcull's were there: the property goes with them
            return
        exiv2 = _exiv2()
        bag = exiv2.Value.create(exiv2.TypeId.xmpBag)
        for word in wanted:
            bag.read(word)
        if "Xmp.dc.subject" in self.xmp:
            del self.xmp["Xmp.dc.subject"]
        self.xmp["Xmp.dc.subject"] = bag

    def encode(self) -> bytes:
        exiv2 = _exiv2()
        flags = exiv2.XmpParser.XmpFormatFlags
        with _exiv2_lock:
            code, packet = exiv2.XmpParser.encode(self.xmp, flags.useCompactFormat | flags.omitPacketWrapper)
        if code == 0 and not packet and self.xmp.empty():
            # Every property removed (a pick undone on a photo with nothing else): exiv2 writes
            # nothing at all, but the sidecar stays a valid, empty XMP document.
            packet = EMPTY_XMP
        if code != 0 or not packet:
            raise XmpError(f"exiv2 could not write XMP (code {code})")
        # Once exiv2 has parsed an xml:lang attribute on an rdf:Description, it registers the
        # reserved prefix `xml` for the rest of the process and declares it in every packet it
        # writes (xmlns:xml="http://www.w3.org/XML/1998/namespace/", even bound to a wrong name),
        # which no namespace-aware parser accepts: one such sidecar made every later one with a
        # title or copyright (xml:lang in dc:title) "not well-formed". The prefix is bound by XML
        # itself, so the declaration goes; the result is parsed back and compared as always.
        packet = _XML_PREFIX_DECLARATION.sub("", packet)
        return (XML_DECLARATION + packet).encode("utf-8")


def parse(data: bytes) -> Packet:
    """The packet, or XmpError with the reason it cannot be read."""
    return Packet(data)


def read_fields(text: str | bytes) -> XmpFields:
    """xmp:Rating, xmp:Label and dc:subject, whatever the prefix or form."""
    return Packet(text.encode("utf-8") if isinstance(text, str) else text).fields()


OURS = ("Xmp.xmp.Rating", "Xmp.xmp.Label", "Xmp.dc.subject")
EMPTY_XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/">\n <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
             '  <rdf:Description rdf:about=""/>\n </rdf:RDF>\n</x:xmpmeta>\n')


def merge(data: str | bytes | None, rating: int | None, label: str | None, keywords: list[str],
          drop_label: bool = False) -> bytes:
    """The sidecar with clipcull's fields set: the rating (None leaves it), the label (None leaves
    it; drop_label removes it), and the clipcull:* keywords replaced by `keywords`. The result is
    parsed back: every other property must be there with its value, else XmpError."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    packet = Packet(data)
    if packet.transcoded:
        raise XmpError("is UTF-16/UTF-32; clipcull reads it but writes only UTF-8, so it leaves it alone")
    before = packet.properties()
    if rating is not None:
        packet.set_text("Xmp.xmp.Rating", str(int(rating)))
    if label is not None:
        packet.set_text("Xmp.xmp.Label", label)
    elif drop_label:
        packet.set_text("Xmp.xmp.Label", None)
    packet.set_keywords(keywords)
    out = packet.encode()
    _check_kept(before, Packet(out), rating, label, drop_label, keywords, packet.fields().keywords)
    if data is not None:
        _check_same_tree(data, out)
    return out


def _check_kept(before: dict, written: Packet, rating, label, drop_label, keywords, expected_words) -> None:
    after = written.properties()
    lost = [k for k in before if k not in OURS and after.get(k) != before[k]]
    added = [k for k in after if k not in OURS and k not in before]
    fields = written.fields()
    ours_ok = ((rating is None or fields.rating == int(rating)) and (label is None or fields.label == label)
               and not (drop_label and label is None and fields.label is not None) and fields.keywords == expected_words)
    if lost or added or not ours_ok:
        what = ", ".join((lost + added)[:3]) or "clipcull's own fields"
        raise XmpError(f"exiv2 would not keep every property ({what}); left alone")


def _int(value: str | None) -> int | None:
    """A rating as a whole number; None for none, text, NaN or infinity ("1e999")."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    if number is None or not math.isfinite(number):
        return None
    return int(number)


# --- an independent reading, to catch what exiv2 drops ----------------------------------------

XML_NS = "http://www.w3.org/XML/1998/namespace"
_RDF_SYNTAX = {"about", "ID", "nodeID", "resource", "parseType", "datatype", "type"}


def xml_properties(data: bytes) -> dict[tuple[str, str], str | None]:
    """The top-level XMP properties of a packet, read with a plain namespace-aware XML parser:
    (namespace, name) -> the value of a simple property, or None for an array, a structure or a
    resource. A property written twice is refused here (exiv2 keeps one of them, and may say
    nothing about it)."""
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    found: dict[tuple[str, str], str | None] = {}
    stack: list[str] = []
    state = {"rdf_depth": None, "current": None, "text": [], "simple": True}

    def split(name: str) -> tuple[str, str]:
        ns, _, local = name.rpartition(" ")
        return ns, local

    def add(key: tuple[str, str], value: str | None) -> None:
        if key in found:
            raise XmpError(f"has the property {key[1]} twice; clipcull cannot know which one counts, so leaves it alone")
        found[key] = value

    def start(name, attrs):
        depth = len(stack)
        stack.append(name)
        rdf = state["rdf_depth"]
        if name == f"{RDF_NS} RDF" and rdf is None:
            state["rdf_depth"] = depth
        elif rdf is not None and depth == rdf + 1:  # a node: rdf:Description (or a typed node)
            if name != f"{RDF_NS} Description":
                add(split(name), None)  # a typed node: must be there in exiv2's reading too
            for attr, value in attrs.items():
                ns, local = split(attr)
                if ns in (RDF_NS, XML_NS) or not ns:
                    continue
                add((ns, local), value)
        elif rdf is not None and depth == rdf + 2:  # a top-level property
            state["current"], state["text"] = split(name), []
            odd = [a for a in attrs if split(a)[0] != XML_NS]
            state["simple"] = not odd
        elif rdf is not None and depth > rdf + 2:
            state["simple"] = False

    def end(name):
        stack.pop()
        rdf = state["rdf_depth"]
        if rdf is not None and len(stack) == rdf + 2 and state["current"] is not None:
            add(state["current"], "".join(state["text"]) if state["simple"] else None)
            state["current"] = None
        if rdf is not None and len(stack) == rdf:
            state["rdf_depth"] = None

    def text(data):
        if state["current"] is not None and len(stack) == state["rdf_depth"] + 3:
            state["text"].append(data)

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise XmpError(f"is not well-formed XML ({e})") from None
    return found


def _check_complete(expected: dict[tuple[str, str], str | None], read: dict[str, tuple[str, str]]) -> None:
    """Every property the XML holds must be in what exiv2 read, a simple one with the same value:
    anything less would be lost when the packet is written back, so the packet is refused."""
    exiv2 = _exiv2()
    have: dict[tuple[str, str], str | None] = {}
    for key, (_type, value) in read.items():
        _, prefix, path = key.split(".", 2)
        local = re.match(r"[^\[/?]+", path).group(0)
        try:
            ns = exiv2.XmpProperties.ns(prefix)
        except Exception:  # an exiv2 that cannot name it: compare by name alone
            ns = None
        simple = local == path
        have[(ns, local)] = value if simple else None
        have.setdefault((None, local), value if simple else None)
    for (ns, local), value in expected.items():
        if (ns, local) not in have and (None, local) not in have:
            raise XmpError(f"holds {local} ({ns}), which exiv2 does not read; clipcull leaves it alone rather than lose it")
        got = have.get((ns, local), have.get((None, local)))
        if value is not None and got is not None and got.strip() != value.strip():
            raise XmpError(f"holds {local}={value.strip()[:40]!r}, which exiv2 reads as {got.strip()[:40]!r}; left alone")


# --- the whole packet, read independently, before and after a write ------------------------


_OURS_XML = {(XMP_NS, "Rating"), (XMP_NS, "Label"), (DC_NS, "subject")}


def _check_same_tree(before: bytes, after: bytes) -> None:
    """Everything but clipcull's own fields must come out of exiv2 as it went in, read by a plain
    namespace-aware XML parser, down to nested structures: each value under the same namespace
    URIs. exiv2 keys properties by prefix and keeps one process-wide prefix -> namespace table, so
    a sidecar that bound a prefix to another namespace (`xmlns:lr="http://example.com/"`) made
    exiv2 write a later sidecar's `lr:hierarchicalSubject` under that namespace: Lightroom's
    keywords gone from Lightroom's namespace, and exiv2's own before/after comparison (by prefix)
    saw nothing wrong."""
    from collections import Counter

    text, _ = decode_text(before)
    # a blank sidecar (`touch IMG_0001.xmp`) holds nothing (check_xml)
    old = rdf_leaves(_DECLARATION.sub("", text, count=1).lstrip().encode("utf-8")) if check_xml(text) else Counter()
    new = rdf_leaves(after)
    if old != new:
        changed = sorted({path[0][1] for path, _ in (old - new) + (new - old)})
        raise XmpError(f"exiv2 would not keep every property as it is ({', '.join(changed[:3])}); left alone")


def rdf_leaves(data: bytes):
    """The packet's values as a multiset of (path, value), read with expat: a path is the chain of
    (namespace, name) of properties and struct fields, with array kinds and positions; attribute
    and element forms of one property, rdf:parseType="Resource" and a nested rdf:Description, and
    rdf:value with qualifiers come out alike. clipcull's own top-level fields are left out."""
    from collections import Counter

    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    root: list = [None, {}, [], []]  # name, attributes, children, text
    stack = [root]

    def start(name, attrs):
        node = [name, attrs, [], []]
        stack[-1][2].append(node)
        stack.append(node)

    def end(_name):
        stack.pop()

    def chars(data):
        stack[-1][3].append(data)

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise XmpError(f"is not well-formed XML ({e})") from None
    leaves: Counter = Counter()

    def split(name):
        ns, _, local = name.rpartition(" ")
        return ns, local

    def node_fields(node, path):  # an rdf:Description or a typed node: its fields
        if node[0] != f"{RDF_NS} Description":
            leaves[(path + (("type",) + split(node[0]),), "")] += 1
        for attr, value in node[1].items():
            ns, local = split(attr)
            if ns in (RDF_NS, XML_NS) or not ns:
                continue
            leaves[(path + ((ns, local),), value)] += 1
        for child in node[2]:
            prop(child, path + (split(child[0]),))

    def prop(node, path):
        name, attrs, children, text = node
        for attr, value in attrs.items():
            ns, local = split(attr)
            if ns == XML_NS:
                leaves[(path + (("@", local),), value)] += 1
            elif ns == RDF_NS and local == "resource":
                leaves[(path, value)] += 1  # exiv2 writes it back as text: the same value
            elif ns == RDF_NS or not ns:
                continue
            else:
                leaves[(path + ((ns, local),), value)] += 1  # a struct written as attributes
        if attrs.get(f"{RDF_NS} parseType") == "Resource":
            for child in children:
                field_path = path if child[0] == f"{RDF_NS} value" else path + (split(child[0]),)
                prop(child, field_path)
            return
        if not children:
            if not any(split(a)[0] not in (RDF_NS, XML_NS, "") for a in attrs) and f"{RDF_NS} resource" not in attrs:
                leaves[(path, "".join(text))] += 1
            return
        for child in children:
            ns, local = split(child[0])
            if ns == RDF_NS and local in ("Bag", "Seq", "Alt"):
                leaves[(path, local)] += 1
                for i, item in enumerate(child[2]):
                    prop(item, path + ((local, i),))
            elif ns == RDF_NS and local == "Description":
                for attr, value in child[1].items():
                    ans, alocal = split(attr)
                    if ans and ans not in (RDF_NS, XML_NS):
                        leaves[(path + ((ans, alocal),), value)] += 1
                for grand in child[2]:
                    field_path = path if grand[0] == f"{RDF_NS} value" else path + (split(grand[0]),)
                    prop(grand, field_path)
            else:
                node_fields(child, path)

    def walk(node, in_rdf):
        for child in node[2]:
            if child[0] == f"{RDF_NS} RDF":
                for description in child[2]:
                    node_fields(description, ())
            else:
                walk(child, in_rdf)

    walk(root, False)
    for key in [k for k in leaves if k[0] and k[0][0] in _OURS_XML]:
        del leaves[key]
    return leaves
