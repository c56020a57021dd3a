"""The photographer's own taste: ratings read from sidecars and embedded XMP, heads evaluated
against them, and a personal head trained with cross-validation grouped by shoot."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_cull.api import Events
from clip_cull.culling.journal import Journal
from clip_cull.store.state import StateStore
from clip_cull.research.taste import read_rating, shoot_groups, taste_figures
from helpers import jpeg_with_xmp, run

XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
       ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Lyon" xmp:Rating="{rating}">'
       '<dc:subject><rdf:Bag><rdf:li>{keyword}</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')


def photo(path: Path, brightness: float, seed: int, xmp: str | None = None, when: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(brightness, 30, (48, 64, 3)), 0, 255).astype(np.uint8)
    kwargs = {}
    if when:
        exif = Image.Exif()
        exif[0x8769] = {0x9003: when}  # the Exif IFD; assigning into get_ifd() is lost before Pillow 11.1
        kwargs["exif"] = exif.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=92, **kwargs)
    path.write_bytes(jpeg_with_xmp(buffer.getvalue(), xmp.encode()) if xmp else buffer.getvalue())
    return path


def stars_for(brightness: float) -> int:
    """The planted taste: brighter is better; the darkest are rejects."""
    return -1 if brightness < 45 else int(np.clip(1 + (brightness - 45) // 38, 1, 5))


@pytest.fixture
def library(tmp_path) -> Path:
    """Three shoots, ratings written as Lightroom sidecars, darktable sidecars and embedded XMP
    (with other tools' fields), plus photos clipcull rated itself and unrated ones."""
    root = tmp_path / "library"
    rng = np.random.default_rng(0)
    n = 0
    for shoot in ("2025-05-wedding", "2025-06-portraits", "2025-07-travel"):
        for i in range(24):
            brightness = float(rng.uniform(20, 235))
            stars = stars_for(brightness)
            name = root / shoot / f"IMG_{n:04d}.jpg"
            style = n % 3
            when = f"2025:0{5 + n // 24}:01 10:{(i * 3) // 60:02d}:{(i * 3) % 60:02d}"
            if style == 2:
                photo(name, brightness, n, xmp=XMP.format(rating=stars, keyword="family"), when=when)
            else:
                photo(name, brightness, n, when=when)
                side = name.with_suffix(".xmp") if style == 0 else name.with_name(name.name + ".xmp")
                side.write_text(XMP.format(rating=stars, keyword="family"))
            n += 1
    clipcull_rated = photo(root / "mixed" / "clipcull_rated.jpg", 230, 900)
    embed_as_tag_does(clipcull_rated, 5)  # journaled: clipcull's own rating, never learnt from
    photo(root / "mixed" / "unrated.jpg", 120, 901)
    return root


def embed_as_tag_does(photo: Path, rating: int) -> None:
    """`tag --embed`'s write of one rating, journaled where the commands look (CLIPCULL_STATE)."""
    from clip_cull.culling.tag import apply_tags
    from clip_cull.culling.writer import RATING, Edit, plan_embedded

    store = StateStore.open(os.environ["CLIPCULL_STATE"])
    try:
        change = plan_embedded(str(photo), Edit(rating, keywords=["clipcull:rated"], owned={RATING: str(rating)}))
        assert apply_tags(Journal(store), [change], {"command": "tag"}) is not None
    finally:
        store.close()


def test_ratings_come_from_both_sidecar_styles_and_embedded_xmp(library):
    lightroom = library / "2025-05-wedding" / "IMG_0000.jpg"
    darktable = library / "2025-05-wedding" / "IMG_0001.jpg"
    embedded = library / "2025-05-wedding" / "IMG_0002.jpg"
    assert read_rating(str(lightroom)).source.endswith("IMG_0000.xmp")
    assert read_rating(str(darktable)).source.endswith("IMG_0001.jpg.xmp")
    assert read_rating(str(embedded)).source == "XMP embedded in IMG_0002.jpg"
    store = StateStore.open(os.environ["CLIPCULL_STATE"])
    clipculls = str(library / "mixed" / "clipcull_rated.jpg")
    assert read_rating(clipculls, journal=Journal(store)) is None  # never learn from itself
    assert read_rating(clipculls).stars == 5  # without the journal no value is clipcull's
    store.close()
    assert read_rating(str(library / "mixed" / "unrated.jpg")) is None
    assert read_rating(str(library / "mixed" / "unrated.jpg"), unrated_as=2).stars == 2


def test_figures_match_hand_computed_values():
    stars = np.array([5, 5, 4, 3, 2, 1, -1, -1, 1, 2])
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], float)
    figures = taste_figures(scores, stars, resamples=50)
    assert figures.n == 10 and figures.n_binary == 9 and figures.n_five == 2
    assert figures.accuracy.value == 1.0  # the three best are exactly the 4-5 star ones
    assert figures.five_star_in_top10.value == 0.5  # top 10% = 1 photo, one of the two 5-star ones
    import scipy.stats

    expected = scipy.stats.spearmanr(scores, np.where(stars < 0, 0, stars)).statistic
    assert figures.spearman.value == pytest.approx(expected)


def test_bursts_stay_in_one_group():
    paths = [f"/shoot/IMG_{i}.jpg" for i in range(9)]
    times = ["2025-05-01T10:00:00", "2025-05-01T10:00:01", "2025-05-01T10:00:02",  # a burst
             "2025-05-01T10:05:00", "2025-05-01T10:05:01",  # another
             "2025-05-01T10:09:00", "2025-05-01T10:14:00", "2025-05-01T10:20:00", None]
    groups = shoot_groups(paths, times, min_groups=5)
    assert groups[0] == groups[1] == groups[2] and groups[3] == groups[4]
    assert len({groups[0], groups[3], groups[5], groups[6], groups[7], groups[8]}) == 6


def test_personal_head_beats_a_head_blind_to_the_planted_taste(tiny_env, library, tmp_path):
    out = tmp_path / "mine.safetensors"
    result = run("train", "ratings", library, "-o", out, "--features", "pooled", "--resamples", "100")
    assert result.exit_code == 0, result.stderr
    assert "72 rated by you" in result.stderr
    from clip_cull.model.heads import load_head

    head = load_head(out)
    meta = head.metadata
    assert meta["trained_on"]["photos"] == 72 and meta["trained_on"]["groups"] >= 3
    assert sum(meta["trained_on"]["ratings"].values()) == 72
    personal = meta["eval"]["cross_validated"]["spearman"]["value"]
    assert personal > 0.6
    assert personal > meta["eval"]["zero_shot_ensemble"]["spearman"]["value"]

    evaluation = run("eval", "ratings", library, "--head", out, "--json", "--resamples", "50")
    assert evaluation.exit_code == 0, evaluation.stderr
    rows = [json.loads(l) for l in evaluation.stdout.splitlines()]
    assert [r["head"].split("(")[0] for r in rows] == ["fixed", "context", "ensemble", "linear"]
    assert all(r["n"] == 72 for r in rows)
    assert rows[-1]["spearman"]["value"] > rows[2]["spearman"]["value"]  # in-sample, yours beats the ensemble
    ranked = run("rank", library / "2025-07-travel", "--head", out, "--json")
    assert ranked.exit_code == 0 and len(ranked.stdout.splitlines()) == 24


def test_the_api_finds_what_eval_ratings_prints_and_prints_nothing(tiny_env, library, capsys):
    from clip_cull.api import ModelChoice, RatingsChoice, Taste

    printed = run("eval", "ratings", library, "--json", "--resamples", "50", "--unrated-as", "2")
    assert printed.exit_code == 0, printed.stderr
    config, checkpoint = tiny_env
    told = []

    class Told(Events):
        def ratings_read(self, rated):
            told.append((rated.photos, len(rated.paths), rated.counts()[2]))

    with Taste(library, ratings=RatingsChoice(unrated_as=2), model=ModelChoice(str(config), str(checkpoint)),
               cache=os.environ["CLIPCULL_DB"], state=os.environ["CLIPCULL_STATE"], events=Told()) as taste:
        rows = taste.evaluate(resamples=50)
    assert [row.as_dict() for row in rows] == [json.loads(line) for line in printed.stdout.splitlines()]
    assert told == [(74, 74, 16)]  # the photo clipcull rated itself counts as unrated: 2 stars
    assert capsys.readouterr().err == ""


def test_too_few_ratings_is_said_plainly(tiny_env, tmp_path):
    folder = tmp_path / "few"
    for i in range(10):
        photo(folder / f"IMG_{i}.jpg", 40 + 20 * i, i, xmp=XMP.format(rating=1 + i % 5, keyword="x"))
    result = run("train", "ratings", folder, "-o", tmp_path / "h.safetensors")
    assert result.exit_code == 1
    assert "only 10 rated photos; a personal head needs at least 50" in result.stderr
    assert not (tmp_path / "h.safetensors").exists()


def test_starting_from_a_prior_helps_with_few_ratings():
    from clip_cull.model.heads.linear import LinearFit, fit_linear, probe_head
    from clip_cull.research.metrics import spearman
    from clip_cull.research.taste import fit_taste

    rng = np.random.default_rng(5)
    dim = 40
    w_prior = rng.normal(size=dim)
    big = rng.normal(size=(2000, dim))
    prior = probe_head(fit_linear(big, big @ w_prior + 5), "projected", None)  # an "AVA probe" on plenty of data
    x = rng.normal(size=(60, dim))
    taste_signal = x @ w_prior + 0.8 * x[:, 0]  # mostly the prior's taste, plus a personal twist
    stars = np.clip(np.round(3 + taste_signal / taste_signal.std()), 1, 5).astype(int)
    groups = np.arange(60) // 4
    plain = fit_taste(x, stars, groups)
    adapted = fit_taste(x, stars, groups, prior=prior)
    target = np.where(stars < 0, 0, stars)
    assert spearman(adapted.cv_predictions, target) > spearman(plain.cv_predictions, target) + 0.05
    # the adapted head is one linear function of the features: as saved, it predicts what was fitted
    head = probe_head(LinearFit(adapted.weights, adapted.bias, adapted.mean, adapted.std, adapted.alpha), "projected", None)
    fresh = rng.normal(size=(5, dim))
    assert np.corrcoef(head.predict(fresh), prior.predict(fresh))[0, 1] > 0.9


def test_train_ratings_can_start_from_an_ava_probe(tiny_env, library, mini_ava, tmp_path):
    probe = tmp_path / "ava-probe.safetensors"
    assert run("train", "linear", mini_ava, "-o", probe, "--ridge", "auto").exit_code == 0
    out = tmp_path / "adapted.safetensors"
    result = run("train", "ratings", library, "-o", out, "--features", "pooled", "--start-from", probe, "--resamples", "50")
    assert result.exit_code == 0, result.stderr
    from clip_cull.model.heads import load_head

    meta = load_head(out).metadata
    assert meta["trained_on"]["started_from"] == str(probe)
    wrong = run("train", "ratings", library, "-o", out, "--features", "projected", "--start-from", probe)
    assert wrong.exit_code == 1 and "needs a linear head on projected features" in wrong.stderr
