"""XMP written by other programs: merged through libexiv2, every other property kept (checked with
exiftool, not with clipcull's own parser), every file clipcull writes readable by the exiv2 tool and
by a namespace-aware XML parser; the photographer's ratings found wherever they are; hostile
sidecars are one line each and the run goes on."""

import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from clip_cull.culling.embedded import embedded_packet, find_packet
from clip_cull.culling.ratings import find_rating
from clip_cull.culling.xmp import XmpError, existing_sidecars, merge, read_fields
from helpers import exiftool_json, make_photo, run

EXIFTOOL, EXIV2 = shutil.which("exiftool"), shutil.which("exiv2")
pytestmark = pytest.mark.skipif(not (EXIFTOOL and EXIV2), reason=".ci/run installs exiftool and exiv2")
RDF = 'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
OURS = {"Rating", "Subject", "SourceFile", "XMPToolkit", "Label"}

DARKTABLE_4 = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
   exif:DateTimeOriginal="2023:06:10 14:03:22.00"
   xmp:Rating="1"
   xmpMM:DerivedFrom="IMG_0003.CR2"
   darktable:import_timestamp="63822348123000000"
   darktable:change_timestamp="63822348456000000"
   darktable:export_timestamp="-1"
   darktable:print_timestamp="-1"
   darktable:xmp_version="5"
   darktable:raw_params="0"
   darktable:auto_presets_applied="1"
   darktable:history_end="2"
   darktable:iop_order_version="4"
   darktable:history_basic_hash="3d9a7f6b1c0e"
   darktable:history_current_hash="9f1e22aa0b41">
   <darktable:masks_history>
    <rdf:Seq/>
   </darktable:masks_history>
   <darktable:history>
    <rdf:Seq>
     <rdf:li
      darktable:num="0"
      darktable:operation="rawprepare"
      darktable:enabled="1"
      darktable:modversion="1"
      darktable:params="000000000000000000000000"
      darktable:multi_name=""
      darktable:multi_name_hand_edited="0"
      darktable:multi_priority="0"
      darktable:blendop_version="13"
      darktable:blendop_params="gz11eJxjYIAACQYYOOHEgAZY"/>
     <rdf:li
      darktable:num="1"
      darktable:operation="exposure"
      darktable:enabled="1"
      darktable:modversion="6"
      darktable:params="0000000000000000cdcc4c3e"
      darktable:multi_name=""
      darktable:multi_name_hand_edited="0"
      darktable:multi_priority="0"
      darktable:blendop_version="13"
      darktable:blendop_params="gz11eJxjYIAACQYYOOHEgAZY"/>
    </rdf:Seq>
   </darktable:history>
   <dc:subject>
    <rdf:Bag>
     <rdf:li>darktable|format|cr2</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>darktable|format|cr2</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""

DIGIKAM = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF {RDF}>
  <rdf:Description rdf:about=""
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0/"
    xmlns:acdsee="http://ns.acdsee.com/iptc/1.0/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
   acdsee:categories="&lt;Categories&gt;&lt;Category Assigned=&quot;1&quot;&gt;People&lt;/Category&gt;&lt;/Categories&gt;"
   photoshop:Urgency="0">
   <digiKam:TagsList>
    <rdf:Seq>
     <rdf:li>People/Family</rdf:li>
    </rdf:Seq>
   </digiKam:TagsList>
   <MicrosoftPhoto:LastKeywordXMP>
    <rdf:Bag>
     <rdf:li>People/Family</rdf:li>
    </rdf:Bag>
   </MicrosoftPhoto:LastKeywordXMP>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""

LIGHTROOM = f"""<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000, 0000/00/00-00:00:00        ">
 <rdf:RDF {RDF}>
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
   xmp:ModifyDate="2024-03-01T10:00:00+01:00"
   xmp:Label="Red"
   photoshop:SidecarForExtension="JPG"
   xmpMM:DocumentID="xmp.did:6a1b"
   crs:Version="16.1"
   crs:ProcessVersion="15.4"
   crs:WhiteBalance="As Shot"
   crs:Exposure2012="+0.35"
   crs:HasSettings="True">
   <xmpMM:History>
    <rdf:Seq>
     <rdf:li stEvt:action="saved" stEvt:instanceID="xmp.iid:6a1b" stEvt:when="2024-03-01T10:00:00+01:00"
      stEvt:softwareAgent="Adobe Photoshop Lightroom Classic 13.1 (Macintosh)" stEvt:changed="/metadata"/>
    </rdf:Seq>
   </xmpMM:History>
   <crs:ToneCurvePV2012>
    <rdf:Seq>
     <rdf:li>0, 0</rdf:li>
     <rdf:li>255, 255</rdf:li>
    </rdf:Seq>
   </crs:ToneCurvePV2012>
   <crs:Look>
    <rdf:Description crs:Name="Adobe Color" crs:Amount="1">
     <crs:Parameters>
      <rdf:Description crs:Version="16.1" crs:ConvertToGrayscale="False"/>
     </crs:Parameters>
    </rdf:Description>
   </crs:Look>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>"""


def wrap(attrs: str = "", body: str = "") -> str:
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {RDF}><rdf:Description rdf:about="" {attrs}>{body}'
            '</rdf:Description></rdf:RDF></x:xmpmeta>')


XMP_NS, DC_NS = 'xmlns:xmp="http://ns.adobe.com/xap/1.0/"', 'xmlns:dc="http://purl.org/dc/elements/1.1/"'
BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
                  + "]>" + wrap(DC_NS, "<dc:title>&lol9;</dc:title>"))
XXE = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + wrap(DC_NS, "<dc:title>&e;</dc:title>")


def assert_valid_for_every_reader(path: Path) -> None:
    """The exiv2 tool prints its XMP without an error, and ElementTree (namespace-aware expat)
    parses it with every prefix bound."""
    result = subprocess.run([EXIV2, "-PX", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "rror" not in result.stderr, (path, result.stderr)
    ET.fromstring(path.read_bytes())


# --- merging files other programs wrote --------------------------------------------------------------


def foreign_sidecars(folder: Path) -> dict[str, Path]:
    """Photos IMG_0000..7 and a sidecar of every kind beside them (none with a photographer's rating)."""
    for i in range(8):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i)
    files = {
        "exiftool": folder / "IMG_0000.xmp",
        "element": folder / "IMG_0001.xmp",
        "comment": folder / "IMG_0002.xmp",
        "darktable": folder / "IMG_0003.jpg.xmp",
        "digikam": folder / "IMG_0004.jpg.xmp",
        "lightroom": folder / "IMG_0005.xmp",
        "emptybag": folder / "IMG_0006.xmp",
        "gt": folder / "IMG_0007.xmp",
    }
    subprocess.run([EXIFTOOL, "-q", "-o", str(files["exiftool"]), "-XMP-dc:Creator=Ann Smith", "-XMP-dc:Subject=holiday",
                    "-XMP-dc:Subject=family & friends", "-XMP-photoshop:City=Lyon", "-XMP-xmp:Label=Red",
                    "-XMP-iptcCore:CountryCode=FR", "-XMP-dc:Title=A title"], check=True, timeout=60)
    files["element"].write_text(wrap('xmlns:xmpBasic="http://ns.adobe.com/xap/1.0/"',
                                     "<xmpBasic:CreatorTool>Other</xmpBasic:CreatorTool>"))
    files["comment"].write_text(wrap(XMP_NS, '<!-- <xmp:Rating>5</xmp:Rating> xmp:Rating="4" --><xmp:Nickname>n</xmp:Nickname>'))
    files["darktable"].write_text(DARKTABLE_4)
    files["digikam"].write_text(DIGIKAM)
    files["lightroom"].write_text(LIGHTROOM)
    files["emptybag"].write_text(wrap(DC_NS + ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="a&gt;b"',
                                      "<dc:subject><rdf:Bag/></dc:subject>"))
    files["gt"].write_text(wrap(DC_NS + ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:Headline="x > y &lt;z>"'))
    return files


def test_tag_merges_into_every_kind_of_sidecar_keeping_every_other_property(tiny_env, tmp_path, deadline):
    folder = tmp_path / "shoot"
    files = foreign_sidecars(folder)
    before = {kind: exiftool_json(path, "-struct", "-XMP:all", check=False) for kind, path in files.items()}
    before["gt"]["Headline"] = "x > y <z>"  # exiftool's own reader stops at the '>' in the attribute
    for style in ("lightroom", "darktable"):  # each run writes its naming
        result = run("tag", folder, "--sidecar", style)
        assert result.exit_code == 0, result.stderr
    for kind, path in files.items():
        after = exiftool_json(path, "-struct", "-XMP:all", check=False)
        assert isinstance(after.get("Rating"), int) and 1 <= after["Rating"] <= 5, kind  # one rating, a number
        assert_valid_for_every_reader(path)
        for key in set(before[kind]) | set(after):
            if key not in OURS:
                assert after.get(key) == before[kind].get(key), (kind, key)
        theirs = before[kind].get("Subject", [])
        theirs = [t for t in ([theirs] if isinstance(theirs, str) else theirs) if t]  # an empty Bag reads as ""
        subject = after["Subject"] if isinstance(after["Subject"], list) else [after["Subject"]]
        assert subject[: len(theirs)] == theirs and "clipcull:rated" in subject, kind
    assert exiftool_json(files["exiftool"], "-struct", "-XMP:all", check=False)["Label"] == "Red"  # the photographer's label: only --label changes it
    assert exiftool_json(files["lightroom"], "-struct", "-XMP:all", check=False)["Label"] == "Red"
    # both namings agree: the second run did not mistake the first run's rating for the photographer's
    assert exiftool_json(folder / "IMG_0000.jpg.xmp", "-struct", "-XMP:all", check=False)["Rating"] == exiftool_json(files["exiftool"], "-struct", "-XMP:all", check=False)["Rating"]
    # darktable's import default 1 is not the photographer's: clipcull's rating replaced it
    assert "clipcull:rated" in exiftool_json(files["darktable"], "-struct", "-XMP:all", check=False)["Subject"]


def test_label_changes_only_with_label_and_clipculls_own_label_goes_again(tmp_path):
    path = tmp_path / "a.xmp"
    subprocess.run([EXIFTOOL, "-q", "-o", str(path), "-XMP-xmp:Label=Red"], check=True, timeout=60)
    plain = merge(path.read_bytes(), 3, None, ["clipcull:rated"])
    assert read_fields(plain).label == "Red"
    labelled = merge(path.read_bytes(), 5, "Green", ["clipcull:rated", "clipcull:labelled"])
    assert read_fields(labelled).label == "Green"
    dropped = merge(labelled, 4, None, ["clipcull:rated"], drop_label=True)
    path.write_bytes(dropped)
    assert "Label" not in exiftool_json(path, "-struct", "-XMP:all", check=False)


def test_legacy_xap_prefix_and_element_form_are_the_same_property(tmp_path):
    xap = wrap('xmlns:xap="http://ns.adobe.com/xap/1.0/" xap:Rating="5"')
    assert read_fields(xap).rating == 5  # seen: it is the photographer's rating
    path = tmp_path / "x.xmp"
    path.write_bytes(merge(xap, 2, None, []))
    assert exiftool_json(path, "-struct", "-XMP:all", check=False)["Rating"] == 2 and path.read_text().count("Rating") == 1
    assert_valid_for_every_reader(path)
    element = wrap(XMP_NS, "<xmp:Rating>4</xmp:Rating>")
    assert read_fields(element).rating == 4
    path.write_bytes(merge(element, 1, None, []))
    assert exiftool_json(path, "-struct", "-XMP:all", check=False)["Rating"] == 1 and path.read_text().count("Rating") == 1
    assert read_fields(wrap(XMP_NS, '<!-- <xmp:Rating>5</xmp:Rating> -->')).rating is None  # a comment is not data


def test_new_sidecar_is_valid_for_every_reader(tmp_path):
    path = tmp_path / "n.xmp"
    path.write_bytes(merge(None, -1, '<Red & "Blue">', ["clipcull:rated", "clipcull:not-aesthetic"]))
    assert_valid_for_every_reader(path)
    read = exiftool_json(path, "-struct", "-XMP:all", check=False)
    assert (read["Rating"], read["Label"], read["Subject"]) == (-1, '<Red & "Blue">', ["clipcull:rated", "clipcull:not-aesthetic"])


# --- hostile sidecars ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, why", [
    (XXE, "DOCTYPE"), (BILLION_LAUGHS, "DOCTYPE"),
    (wrap('xmp:Rating="3"'), "not well-formed"),  # unbound prefix: the file exiv2 refused before
    (wrap(DC_NS, "<dc:subject><rdf:Bag>"), "not well-formed"),
    ("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>", "rdf:RDF"),
])
def test_unsafe_or_broken_xmp_is_refused_cheaply(text, why):
    start = time.perf_counter()
    with pytest.raises(XmpError, match=why):
        read_fields(text)
    with pytest.raises(XmpError):
        merge(text, 3, None, [])
    assert time.perf_counter() - start < 1


def test_encodings_utf16_read_latin1_refused():
    text = wrap(XMP_NS + ' xmp:Rating="4"')
    assert read_fields(("\ufeff" + text).encode("utf-16-le")).rating == 4
    assert read_fields(("\ufeff" + '<?xml version="1.0" encoding="UTF-16"?>' + text).encode("utf-16-be")).rating == 4
    with pytest.raises(XmpError, match="UTF-16"):
        merge(("\ufeff" + text).encode("utf-16"), 3, None, [])  # read, never written back
    with pytest.raises(XmpError, match="not UTF-8"):
        read_fields(wrap(XMP_NS + ' xmp:Label="café"').encode("latin-1"))


def test_hostile_sidecars_are_one_line_each_and_the_run_goes_on(tiny_env, tmp_path, deadline):
    folder = tmp_path / "shoot"
    for i in range(9):
        make_photo(folder / f"IMG_{i:04d}.jpg", seed=i)
    hostile = {
        "IMG_0000.xmp": XXE, "IMG_0001.xmp": BILLION_LAUGHS, "IMG_0002.xmp": wrap('xmp:Rating="3"'),
        "IMG_0003.xmp": wrap(DC_NS, "<dc:subject><rdf:Bag>"),
    }
    for name, text in hostile.items():
        (folder / name).write_text(text)
    (folder / "IMG_0004.xmp").write_bytes(wrap(XMP_NS + ' xmp:Label="café"').encode("latin-1"))
    (folder / "IMG_0005.xmp").mkdir()
    os.mkfifo(folder / "IMG_0006.xmp")
    (folder / "IMG_0007.xmp").write_bytes(b"<x:xmpmeta " + b" " * (9 << 20) + b"/>")  # over the size limit
    elsewhere = tmp_path / "elsewhere.xmp"
    elsewhere.write_text(wrap(XMP_NS))
    (folder / "IMG_0008.xmp").symlink_to(elsewhere)
    before = {p.name: (p.read_bytes() if p.is_file() else None) for p in folder.iterdir() if not p.is_fifo()}
    result = run("tag", folder)
    assert result.exit_code == 0, result.stderr
    for i in range(9):  # one line each, naming the sidecar
        lines = [l for l in result.stderr.splitlines() if f"IMG_{i:04d}.xmp" in l]
        assert len(lines) == 1 and "left alone" in lines[0], (i, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    after = {p.name: (p.read_bytes() if p.is_file() else None) for p in folder.iterdir() if not p.is_fifo()}
    assert {k: after[k] for k in before} == before  # every one of them untouched, the symlink's target too
    assert elsewhere.read_text() == wrap(XMP_NS) and (folder / "IMG_0008.xmp").is_symlink()


def test_unreadable_sidecar_is_left_alone(tmp_path, monkeypatch):
    photo = make_photo(tmp_path / "IMG_0001.jpg", seed=1)
    side = tmp_path / "IMG_0001.xmp"
    side.write_text(wrap(XMP_NS + ' xmp:Rating="4"'))
    real_open = os.open

    def refuse(path, *args, **kwargs):  # tests run as root, where chmod 000 does not stop a read
        if str(path) == str(side):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    found = find_rating(str(photo))
    assert found.rating is None and found.problems == [(str(side), "cannot be read (Permission denied)")]


def test_read_only_sidecar_keeps_its_mode(tiny_env, photo_folder, deadline):
    side = photo_folder / "IMG_0001.xmp"
    side.write_text(DIGIKAM)
    side.chmod(0o444)
    assert run("tag", photo_folder).exit_code == 0
    assert oct(side.stat().st_mode & 0o777) == oct(0o444)
    assert 1 <= exiftool_json(side, "-struct", "-XMP:all", check=False)["Rating"] <= 5


def test_a_tag_that_changes_nothing_is_not_journaled(tiny_env, photo_folder, deadline):
    assert run("tag", photo_folder).exit_code == 0
    second = run("tag", photo_folder)
    assert second.exit_code == 0 and "nothing to change" in second.stderr
    history = run("history").stdout
    assert sum(" tag " in line for line in history.splitlines()) == 1


# --- where sidecars and ratings are ---------------------------------------------------------------


def test_existing_sidecars_by_every_convention(tmp_path):
    photo = make_photo(tmp_path / "IMG_0001.jpg", seed=1)
    for name in ("IMG_0001.XMP", "IMG_0001.jpg.xmp", "IMG_0001_01.jpg.xmp", "IMG_0001_12.jpg.XMP",
                 "IMG_00011.xmp", "IMG_0001_01.png.xmp", "IMG_0002.xmp"):
        (tmp_path / name).write_text(wrap())
    (tmp_path / "IMG_0001.Xmp").mkdir()  # not a file: not a sidecar
    assert [p.name for p in existing_sidecars(photo)] == ["IMG_0001.XMP", "IMG_0001.jpg.xmp", "IMG_0001_01.jpg.xmp",
                                                         "IMG_0001_12.jpg.XMP"]


def rated(path: Path, rating: int, extra: str = "") -> Path:
    path.write_text(wrap(XMP_NS + f' xmp:Rating="{rating}"' + extra))
    return path


def test_ratings_found_in_every_source(tmp_path):
    jpg = make_photo(tmp_path / "a" / "IMG_0001.jpg", seed=1)
    rated(tmp_path / "a" / "IMG_0001.XMP", 4)
    assert (find_rating(str(jpg)).rating, Path(find_rating(str(jpg)).source).name) == (4, "IMG_0001.XMP")

    jpg = make_photo(tmp_path / "b" / "IMG_0002.jpg", seed=2)
    raw = tmp_path / "b" / "IMG_0002.CR2"
    raw.write_bytes(b"II*\x00raw")
    rated(tmp_path / "b" / "IMG_0002.CR2.xmp", 5)  # darktable users rate the RAW of a pair
    assert find_rating(str(jpg), [str(raw)]).rating == 5

    jpg = make_photo(tmp_path / "c" / "IMG_0003.jpg", seed=3)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-xmp:Rating=3", str(jpg)], check=True, timeout=60)
    found = find_rating(str(jpg))
    assert (found.rating, found.source) == (3, "XMP embedded in IMG_0003.jpg")

    tif = make_photo(tmp_path / "d" / "IMG_0004.tif", seed=4, fmt="TIFF")
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-xmp:Rating=2", str(tif)], check=True, timeout=60)
    jpg = make_photo(tmp_path / "d" / "IMG_0004.jpg", seed=4)
    assert find_rating(str(jpg), [str(tif)]).rating == 2  # embedded in the RAW companion


def test_rating_precedence_zero_disagreement_darktable_default_and_a_keyword_alone(tmp_path):
    jpg = make_photo(tmp_path / "IMG_0001.jpg", seed=1)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-xmp:Rating=5", str(jpg)], check=True, timeout=60)
    side = rated(tmp_path / "IMG_0001.xmp", 0)
    found = find_rating(str(jpg))
    assert found.rating == 0 and "disagree" in found.disagreement  # 0 is unrated by choice: it stops there
    rated(side, 2)
    found = find_rating(str(jpg))
    assert found.rating == 2 and found.disagreement.count("\n") == 0 and "5 in XMP embedded" in found.disagreement

    side.unlink()
    dt = tmp_path / "IMG_0001.jpg.xmp"
    dt.write_text(DARKTABLE_4)  # darktable's import default 1: looked past
    assert find_rating(str(jpg)).rating == 5
    assert find_rating(str(jpg), darktable_default_counts=True).rating == 1
    rated(side, 4, ' xmlns:dc="http://purl.org/dc/elements/1.1/"')
    side.write_text(wrap(XMP_NS + " " + DC_NS + ' xmp:Rating="4"',
                         "<dc:subject><rdf:Bag><rdf:li>clipcull:rated</rdf:li></rdf:Bag></dc:subject>"))
    # clipcull's keyword proves nothing (the photographer may have re-rated since): without a
    # journal entry saying clipcull wrote exactly this 4 there, it is the photographer's
    assert find_rating(str(jpg)).rating == 4


def test_tag_keeps_the_photographers_rating_from_any_source(tiny_env, photo_folder, deadline):
    jpg = photo_folder / "IMG_0001.jpg"
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-xmp:Rating=4", str(jpg)], check=True, timeout=60)
    rated(photo_folder / "IMG_0002.jpg.xmp", 3)  # rated under the other naming
    result = run("tag", photo_folder)
    assert result.exit_code == 0
    assert not (photo_folder / "IMG_0001.xmp").exists() and not (photo_folder / "IMG_0002.xmp").exists()
    assert "keeps the photographer's rating 4" in result.stdout and "keeps the photographer's rating 3" in result.stdout


# --- embedded XMP: linear and bounded --------------------------------------------------------------


def test_embedded_scan_is_linear_on_crafted_input(tmp_path):
    crafted = tmp_path / "crafted.tif"
    make_photo(crafted, seed=1, fmt="TIFF")
    with open(crafted, "ab") as f:
        f.write(b"<x:xmpmeta" * 400_000)  # 4 MB of openings and no end
    start = time.perf_counter()
    assert embedded_packet(str(crafted)) is None
    assert find_packet(b"<x:xmpmeta" * 400_000) is None
    assert time.perf_counter() - start < 2
    jpeg = make_photo(tmp_path / "j.jpg", seed=2)
    with open(jpeg, "ab") as f:
        f.write(b"<x:xmpmeta" * 400_000 + b"</x:xmpmeta>")  # after the image data: not the photo's XMP
    assert embedded_packet(str(jpeg)) is None
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    assert embedded_packet(str(fifo)) is None  # never opened


# --- tag --embed -------------------------------------------------------------------------------------


def all_but_xmp(path: Path) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-a", "-G1", "--XMP:all", "--File:all", "--ExifTool:all", "--Composite:all",
                          str(path)], capture_output=True, text=True, timeout=60)
    return {k: v for k, v in json.loads(out.stdout)[0].items()
            if k != "SourceFile" and not k.endswith("Offsets")}  # where the strips sit moves when a TIFF grows


def test_embed_writes_the_rating_into_jpeg_and_tiff_and_undo_restores(tiny_env, tmp_path, deadline):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "shoot"
    jpg = make_photo(folder / "a.jpg", seed=1)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-EXIF:Artist=Ann", "-XMP-dc:Creator=Ann",
                    "-XMP-photoshop:City=Lyon", str(jpg)], check=True, timeout=60)
    tif = make_photo(folder / "b.tif", seed=2, fmt="TIFF")
    png = make_photo(folder / "c.png", seed=3, fmt="PNG")
    pixels = {p: np.asarray(Image.open(p)).copy() for p in (jpg, tif, png)}
    others = {p: all_but_xmp(p) for p in (jpg, tif)}
    before_xmp = exiftool_json(jpg, "-struct", "-XMP:all", check=False)
    originals = {p: p.read_bytes() for p in (jpg, tif, png)}

    result = run("tag", folder, "--embed")
    assert result.exit_code == 0, result.stderr
    assert "not embedded" in result.stdout and "c.png" in result.stdout  # PNG: said, sidecar only
    assert png.read_bytes() == originals[png]
    for p in (jpg, tif):
        assert np.array_equal(np.asarray(Image.open(p)), pixels[p])  # pixels untouched
        assert all_but_xmp(p) == others[p]  # EXIF and the rest as they were
        read = exiftool_json(p, "-struct", "-XMP:all", check=False)
        assert 1 <= read["Rating"] <= 5 and read["Rating"] == exiftool_json(p.with_suffix(".xmp"), "-struct", "-XMP:all", check=False)["Rating"]
    after_xmp = exiftool_json(jpg, "-struct", "-XMP:all", check=False)
    for key in set(before_xmp) | set(after_xmp):
        if key not in OURS:
            assert after_xmp.get(key) == before_xmp.get(key), key

    undo = run("undo")
    assert undo.exit_code == 0, undo.stderr
    assert exiftool_json(jpg, "-struct", "-XMP:all", check=False).get("Rating") is None and exiftool_json(jpg, "-struct", "-XMP:all", check=False)["City"] == "Lyon"
    assert exiftool_json(tif, "-struct", "-XMP:all", check=False).get("Rating") is None
    for p in (jpg, tif):
        assert np.array_equal(np.asarray(Image.open(p)), pixels[p]) and all_but_xmp(p) == others[p]
    assert not list(folder.glob("*.xmp"))


def test_undo_of_an_embed_follows_the_photo_a_later_move_took(tiny_env, tmp_path, deadline):
    """tag --embed, then move, then undo of the tag run: the photo's earlier XMP goes back where
    the photo is now; undoing the move afterwards still brings it home (no conflict)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "shoot"
    jpg = make_photo(folder / "a.jpg", seed=1)
    make_photo(folder / "b.jpg", seed=2)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Creator=Ann", str(jpg)], check=True, timeout=60)
    pixels = np.asarray(Image.open(jpg)).copy()
    assert run("tag", folder, "--embed").exit_code == 0  # run 1
    assert exiftool_json(jpg, "-struct", "-XMP:all", check=False).get("Rating") is not None
    moved = run("move", folder, "--worst", "100%")  # run 2
    assert moved.exit_code == 0, moved.stderr
    there = folder / "_rejects" / "a.jpg"
    undo_tag = run("undo", "1")
    assert undo_tag.exit_code == 0, undo_tag.stderr
    assert f"put back at {there}" in undo_tag.stderr
    read = exiftool_json(there, "-struct", "-XMP:all", check=False)
    assert read.get("Rating") is None and read["Creator"] == ["Ann"]
    assert np.array_equal(np.asarray(Image.open(there)), pixels)
    undo_move = run("undo", "2")
    assert undo_move.exit_code == 0, undo_move.stderr
    assert exiftool_json(jpg, "-struct", "-XMP:all", check=False).get("Rating") is None and exiftool_json(jpg, "-struct", "-XMP:all", check=False)["Creator"] == ["Ann"]
    assert not there.exists()


def test_embed_into_dng_keeps_the_raw_data(tmp_path):
    import io

    import numpy as np
    import rawpy
    from test_raw_quality import make_dng

    from clip_cull.culling.embedded import embed_rating

    dng = make_dng(tmp_path / "a.dng")
    data = dng.read_bytes()
    _, new = embed_rating(str(dng), data, 4, ["clipcull:rated"])
    out = tmp_path / "b.dng"
    out.write_bytes(new)
    assert exiftool_json(out, "-struct", "-XMP:all", check=False)["Rating"] == 4
    with rawpy.imread(io.BytesIO(data)) as a, rawpy.imread(str(out)) as b:
        assert np.array_equal(a.raw_image, b.raw_image)
