"""`clipcull search`: photos by text, over the cached embeddings only."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np

from conftest import TINY_NAME
from helpers import make_photo, run, usage_error


def independent_search_order(env, folder: Path, text: str, tiny_model_files) -> list[str]:
    """File names by cosine of their cached image embedding (read from SQLite) with open_clip's
    own text embedding of "a photo of TEXT"; ties by name."""
    import open_clip
    import torch

    _, checkpoint = tiny_model_files
    model = open_clip.create_model(TINY_NAME, pretrained=None)
    model.load_state_dict(torch.load(checkpoint))
    model.eval()
    with torch.no_grad():
        t = model.encode_text(open_clip.get_tokenizer(TINY_NAME)([f"a photo of {text}"]))[0].numpy().astype(np.float64)
    db = sqlite3.connect(env["CLIPCULL_DB"])
    rows = db.execute("select f.path, e.projected from files f join embeddings e on e.fingerprint = f.fingerprint").fetchall()
    db.close()
    sims = {}
    for path, blob in rows:
        if path.startswith(str(folder) + os.sep) and os.path.exists(path):
            v = np.frombuffer(blob, np.float16).astype(np.float64)
            sims[os.path.basename(path)] = float(v @ t / np.linalg.norm(v) / np.linalg.norm(t))
    return sorted(sims, key=lambda n: (-round(sims[n], 5), n))


def embedding_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from embeddings").fetchone()[0]


def test_search_ranks_cached_photos_by_text_similarity(tiny_env, tiny_model_files, photo_folder, private_cache):
    assert run("rank", photo_folder).exit_code == 0
    expected = independent_search_order({"CLIPCULL_DB": str(private_cache)}, photo_folder, "a dog on the beach",
                                        tiny_model_files)
    result = run("search", "a dog on the beach", photo_folder, "--json", "--top", "5")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [os.path.basename(r["path"]) for r in rows] == expected[:5]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(a["similarity"] >= b["similarity"] for a, b in zip(rows, rows[1:]))

    paths = run("search", "a dog on the beach", photo_folder, "--print0", "--top", "8").stdout
    assert paths.endswith("\0") and [os.path.basename(p) for p in paths.split("\0")[:-1]] == expected

    table = run("search", "a dog on the beach", photo_folder, "--top", "2").stdout
    assert expected[0] in table and expected[1] in table and expected[2] not in table


def test_search_embeds_no_photo_and_says_which_were_left_out(tiny_env, photo_folder, private_cache):
    assert run("rank", photo_folder).exit_code == 0
    before = embedding_rows(private_cache)
    make_photo(photo_folder / "NEW.jpg", seed=99)
    result = run("search", "a dog", photo_folder, "--json")
    assert result.exit_code == 0
    assert "NEW.jpg" not in result.stdout and len(result.stdout.splitlines()) == 8
    assert "1 photo not searched: not embedded yet" in result.stderr
    assert embedding_rows(private_cache) == before


def test_search_options_are_checked(tiny_env, photo_folder):
    usage_error(run("search", "x", photo_folder, "--json", "--print0"), "Invalid value: choose one of --json and --print0")
    usage_error(run("search", "x", photo_folder, "--template", "no placeholder"), "Invalid value: --template must contain {query}")
    result = run("search", "   ", photo_folder)
    assert result.exit_code == 1 and "the search text is empty" in result.stderr


def test_search_with_nothing_cached_says_so_and_embeds_nothing(tiny_env, photo_folder, private_cache):
    result = run("search", "a dog", photo_folder, "--json")
    assert result.exit_code == 0 and result.stdout == ""
    assert "8 photos not searched: not embedded yet" in result.stderr
    assert embedding_rows(private_cache) == 0


def test_hostile_query_text_is_one_clear_line_or_searched_as_its_words(tiny_env, photo_folder, private_cache):
    assert run("rank", photo_folder).exit_code == 0
    plain = run("search", "red sky", photo_folder, "--json").stdout
    # control characters and bytes that are not UTF-8 (argv's surrogate escapes) are no words
    dirty = run("search", "\x1bred\x00 \udcff\x07sky\r\n", photo_folder, "--json")
    assert dirty.exit_code == 0, dirty.stderr
    assert dirty.stdout == plain
    long = run("search", "sky " * 2500, photo_folder)
    assert long.exit_code == 1
    assert "the search text is 9,999 characters; at most 1000 are used" in long.stderr
    assert "Traceback" not in long.stderr + dirty.stderr
    assert run("search", "\x00\x1b\x07", photo_folder).exit_code == 1


def test_a_template_is_text_with_one_placeholder_not_a_format_string(tiny_env, tiny_model_files, photo_folder,
                                                                      private_cache):
    assert run("rank", photo_folder).exit_code == 0
    expected = independent_search_order({"CLIPCULL_DB": str(private_cache)}, photo_folder, "{0} {x} dog",
                                        tiny_model_files)
    for template in ("a photo of {query} {0}", "a photo of {query} {x}", "{query:>999999999} a photo of {query}"):
        result = run("search", "dog", photo_folder, "--template", template, "--json")
        assert result.exit_code == 0, result.stderr
        assert "Traceback" not in result.stderr
    # the braces stay as typed: "{0} {x} dog" in the default template is what open_clip embeds
    result = run("search", "{0} {x} dog", photo_folder, "--json")
    assert [os.path.basename(json.loads(line)["path"]) for line in result.stdout.splitlines()] == expected


def test_search_without_folders_takes_the_last_ranked_and_shows_paths_as_rank_does(tiny_env, photo_folder):
    """Like `best`: no folder given, the folders of the last `clipcull rank`; the table's paths are
    relative to them, as in `rank`'s table (--json keeps full paths)."""
    refused = run("search", "a dog")
    assert refused.exit_code == 1
    assert refused.stderr == ("clipcull: error: no folders given and no earlier `clipcull rank` to take them from: "
                              "clipcull search QUERY FOLDER\n")
    assert run("rank", photo_folder).exit_code == 0
    table = run("search", "a dog", "--top", "8")
    assert table.exit_code == 0, table.stderr
    assert table.stdout == run("search", "a dog", photo_folder, "--top", "8").stdout
    rows = [line.split() for line in table.stdout.splitlines()[1:]]
    assert len(rows) == 8 and {row[2] for row in rows} == {*(f"IMG_{i:04d}.jpg" for i in range(6)),
                                                           "day2/IMG_0006.jpg", "day2/IMG_0007.jpg"}
    assert str(photo_folder) not in table.stdout
    assert table.stdout.splitlines()[0].split() == ["#", "similarity", "path"]
    rows_json = [json.loads(line) for line in run("search", "a dog", "--json").stdout.splitlines()]
    assert all(r["path"].startswith(str(photo_folder) + os.sep) for r in rows_json) and len(rows_json) == 8
