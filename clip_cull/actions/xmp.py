"""XMP sidecars that Lightroom, darktable, digiKam and exiftool read, merged without harm.

clipcull owns three things in a sidecar: `xmp:Rating`, `xmp:Label`, and the `clipcull:*` entries
of `dc:subject`. Editing is done on the text itself, touching only those fields, so everything
else (darktable's edit history, other tools' keywords, formatting) stays byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

XMP_NS = "http://ns.adobe.com/xap/1.0/"
DC_NS = "http://purl.org/dc/elements/1.1/"
KEYWORD_PREFIX = "clipcull:"
RATED_KEYWORD = "clipcull:rated"  # marks ratings clipcull wrote, so it never mistakes them for the photographer's
SIDECAR_STYLES = ("lightroom", "darktable")

NEW_SIDECAR = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="clipcull">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/">
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


class XmpError(Exception):
    """The sidecar's text is not XMP clipcull can edit safely."""


def sidecar_path(photo: str | Path, style: str = "lightroom") -> Path:
    """Lightroom and Capture One: IMG_0001.xmp; darktable and digiKam: IMG_0001.JPG.xmp."""
    photo = Path(photo)
    if style == "darktable":
        return photo.with_name(photo.name + ".xmp")
    if style == "lightroom":
        return photo.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar style {style!r}")


def existing_sidecars(photo: str | Path) -> list[Path]:
    """Every sidecar a photo has, under either naming convention."""
    return [p for p in dict.fromkeys(sidecar_path(photo, s) for s in SIDECAR_STYLES) if p.is_file()]


@dataclass
class XmpFields:
    rating: int | None = None
    label: str | None = None
    keywords: list[str] = field(default_factory=list)


def read_fields(text: str) -> XmpFields:
    """xmp:Rating, xmp:Label and dc:subject, as attributes or elements."""
    return XmpFields(
        _int(_get(text, "xmp", "Rating")),
        _get(text, "xmp", "Label"),
        [_unescape(k) for k in re.findall(r"<rdf:li[^>]*>(.*?)</rdf:li>", _subject_block(text) or "", re.S)],
    )


def merge(text: str | None, rating: int | None, label: str | None, keywords: list[str]) -> str:
    """The sidecar text with clipcull's fields set: rating and label (None leaves them out),
    and the clipcull:* keywords replaced by `keywords`. Foreign text is kept as it was."""
    text = NEW_SIDECAR if text is None else text
    if "<rdf:Description" not in text:
        raise XmpError("no rdf:Description element")
    for name, value in (("Rating", None if rating is None else str(rating)), ("Label", label)):
        text = _set(text, "xmp", name, value)
    return _set_keywords(text, keywords)


# --- fields as attributes or elements --------------------------------------------------------


def _get(text: str, prefix: str, name: str) -> str | None:
    m = re.search(rf'\s{prefix}:{name}\s*=\s*(["\'])(.*?)\1', text, re.S)
    if m:
        return _unescape(m.group(2))
    m = re.search(rf"<{prefix}:{name}>(.*?)</{prefix}:{name}>", text, re.S)
    return _unescape(m.group(1).strip()) if m else None


def _set(text: str, prefix: str, name: str, value: str | None) -> str:
    attr = re.compile(rf'(\s){prefix}:{name}\s*=\s*(["\'])(.*?)\2', re.S)
    elem = re.compile(rf"<{prefix}:{name}>(.*?)</{prefix}:{name}>", re.S)
    if attr.search(text):
        if value is None:
            return attr.sub("", text, count=1)
        return attr.sub(lambda m: f"{m.group(1)}{prefix}:{name}={quoteattr(value)}", text, count=1)
    if elem.search(text):
        if value is None:
            return _drop_element_line(text, elem)
        return elem.sub(lambda m: f"<{prefix}:{name}>{escape(value)}</{prefix}:{name}>", text, count=1)
    if value is None:
        return text
    text = _ensure_namespace(text, prefix, XMP_NS if prefix == "xmp" else DC_NS)
    start = _description_start(text)
    insert_at = start.end() - (2 if start.group(0).endswith("/>") else 1)
    return text[:insert_at] + f"\n    {prefix}:{name}={quoteattr(value)}" + text[insert_at:]


def _drop_element_line(text: str, pattern: re.Pattern) -> str:
    m = pattern.search(text)
    begin = text.rfind("\n", 0, m.start())
    only_space = begin >= 0 and not text[begin + 1 : m.start()].strip()
    return text[: begin if only_space else m.start()] + text[m.end() :]


def _description_start(text: str) -> re.Match:
    m = re.search(r"<rdf:Description\b[^>]*?/?>", text, re.S)
    if not m:
        raise XmpError("no rdf:Description element")
    return m


def _ensure_namespace(text: str, prefix: str, uri: str) -> str:
    if re.search(rf"xmlns:{prefix}\s*=", text):
        return text
    start = _description_start(text)
    insert_at = start.end() - (2 if start.group(0).endswith("/>") else 1)
    return text[:insert_at] + f'\n    xmlns:{prefix}="{uri}"' + text[insert_at:]


# --- dc:subject ------------------------------------------------------------------------------


def _subject_block(text: str) -> str | None:
    m = re.search(r"<dc:subject>.*?</dc:subject>", text, re.S)
    return m.group(0) if m else None


def _set_keywords(text: str, keywords: list[str]) -> str:
    block = _subject_block(text)
    ours = re.compile(rf"[ \t]*<rdf:li[^>]*>{re.escape(KEYWORD_PREFIX)}.*?</rdf:li>\n?", re.S)
    if block is not None:
        new_block = ours.sub("", block)
        if keywords:
            close = new_block.rfind("</rdf:Bag>")
            if close < 0:
                raise XmpError("dc:subject without an rdf:Bag")
            indent = _indent_before(new_block, close) + " "
            items = "".join(f"{indent}<rdf:li>{escape(k)}</rdf:li>\n" for k in keywords)
            line_start = new_block.rfind("\n", 0, close) + 1
            new_block = new_block[:line_start] + items + new_block[line_start:]
        if not re.search(r"<rdf:li", new_block):  # clipcull added the whole block: take it out whole
            return _remove_block(text, block) if not keywords else text.replace(block, new_block, 1)
        return text.replace(block, new_block, 1)
    if not keywords:
        return text
    text = _ensure_namespace(text, "dc", DC_NS)
    start = _description_start(text)
    if start.group(0).endswith("/>"):  # <rdf:Description .../> has no room for elements: open it
        opened = start.group(0)[:-2].rstrip() + ">"
        text = text[: start.start()] + opened + "\n  </rdf:Description>" + text[start.end() :]
        start = _description_start(text)
    items = "".join(f"     <rdf:li>{escape(k)}</rdf:li>\n" for k in keywords)
    element = f"\n   <dc:subject>\n    <rdf:Bag>\n{items}    </rdf:Bag>\n   </dc:subject>"
    return text[: start.end()] + element + text[start.end() :]


def _remove_block(text: str, block: str) -> str:
    at = text.find(block)
    begin = text.rfind("\n", 0, at)
    if begin >= 0 and not text[begin + 1 : at].strip():
        at = begin
    return text[:at] + text[text.find(block) + len(block) :]


def _indent_before(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    return re.match(r"[ \t]*", text[line_start:pos]).group(0)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _unescape(text: str) -> str:
    return (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
            .replace("&apos;", "'").replace("&amp;", "&"))
