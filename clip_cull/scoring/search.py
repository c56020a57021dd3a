"""Finding photos by text: a CLIP text embedding against the cached image embeddings.

No photo is embedded here: only photos whose embedding for the model is already in the cache
are searched (`clipcull rank` puts them there). The query becomes one prompt from a template
("a photo of {query}"), embedded once and cached like the ranking prompts.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clip_cull.core.errors import InputError
from clip_cull.model.heads.base import l2_normalize
from clip_cull.scoring.indexer import prompt_embeddings
from clip_cull.model.session import ModelSession
from clip_cull.store.cache import Store

QUERY_FIELD = "{query}"
QUERY_TEMPLATE = f"a photo of {QUERY_FIELD}"
MAX_QUERY_CHARS = 1000


@dataclass
class SearchHit:
    rank: int
    path: str
    similarity: float  # cosine of the photo's and the query's embeddings

    def as_dict(self) -> dict:
        return {"rank": self.rank, "path": self.path, "similarity": round(self.similarity, 6)}


class EmbeddingIndex:
    """The unit image embeddings of a set of photos, loaded once from the cache; photos
    without a cached embedding for the model are listed in `missing`."""

    def __init__(self, store: Store, paths: Sequence[str], model_id: str):
        records = store.file_records(list(paths))
        fingerprints = {p: records[p].fingerprint for p in paths if p in records and records[p].fingerprint}
        vectors = store.embeddings(list(dict.fromkeys(fingerprints.values())), model_id, "projected")
        self.paths = [p for p in paths if fingerprints.get(p) in vectors]
        self.missing = [p for p in paths if fingerprints.get(p) not in vectors]
        dim = next(iter(vectors.values())).shape[0] if vectors else 0
        matrix = np.stack([vectors[fingerprints[p]] for p in self.paths]).astype(np.float32) if self.paths \
            else np.zeros((0, dim), np.float32)
        self.unit = l2_normalize(matrix) if len(matrix) else matrix

    def __len__(self) -> int:
        return len(self.paths)

    def similarities(self, text_vector: np.ndarray) -> np.ndarray:
        """Cosine of every photo with one text embedding."""
        if self.unit.shape[1] != text_vector.shape[0]:
            raise InputError(
                f"the cached embeddings have {self.unit.shape[1]} dimensions and the text model "
                f"{text_vector.shape[0]}: search with the model the folder was ranked with"
            )
        return self.unit @ (text_vector / max(float(np.linalg.norm(text_vector)), 1e-12))

    def top(self, text_vector: np.ndarray, top: int | None = None) -> list[SearchHit]:
        """Photos by similarity, most similar first (ties by path)."""
        if not self.paths:
            return []
        sims = self.similarities(np.asarray(text_vector, np.float32))
        order = np.lexsort((np.array(self.paths), -sims))
        chosen = order[:top] if top else order
        return [SearchHit(n + 1, self.paths[i], float(sims[i])) for n, i in enumerate(chosen)]


def up_to_date(store: Store, photos: Sequence) -> tuple[list[str], list[str]]:
    """(paths whose cache row matches the file as it is now, paths new or changed since):
    only the first have an embedding of their current content."""
    records = store.file_records([p.path for p in photos])
    fresh, stale = [], []
    for p in photos:
        r = records.get(p.path)
        ok = r is not None and r.fingerprint and (r.size, r.mtime_ns) == (p.size, p.mtime_ns)
        (fresh if ok else stale).append(p.path)
    return fresh, stale


def query_prompt(query: str, template: str = QUERY_TEMPLATE) -> str:
    # Control characters (and a terminal's escapes) say nothing about a picture; undecodable
    # bytes from the command line (surrogate escapes) could not be stored in the cache.
    query = "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c for c in query)
    query = " ".join(query.split())
    if not query:
        raise InputError("the search text is empty")
    if len(query) > MAX_QUERY_CHARS:
        # CLIP reads 77 tokens: a longer text only fills the cache with prompts that embed alike
        raise InputError(f"the search text is {len(query):,} characters; at most {MAX_QUERY_CHARS} are used")
    if QUERY_FIELD not in template:
        raise InputError(f"the template must contain {QUERY_FIELD}")
    # Not str.format: a template is text from the user, and "{0}", "{x}" or "{query:>999999999}"
    # there would be a traceback or a gigabyte string rather than words.
    return template.replace(QUERY_FIELD, query)


def query_embedding(store: Store, session: ModelSession, query: str, template: str = QUERY_TEMPLATE) -> np.ndarray:
    """The text embedding of the query's prompt (cached in the store like ranking prompts)."""
    prompt = query_prompt(query, template)
    return np.asarray(prompt_embeddings(store, session, [prompt])[prompt], np.float32)


def search(store: Store, session: ModelSession, paths: Sequence[str], query: str, top: int | None = None,
           template: str = QUERY_TEMPLATE) -> tuple[list[SearchHit], list[str]]:
    """(hits, photos not searched because they have no cached embedding)."""
    query_prompt(query, template)  # an empty query is an error even where nothing is cached
    index = EmbeddingIndex(store, paths, session.model_id)
    if not len(index):
        return [], index.missing
    return index.top(query_embedding(store, session, query, template), top), index.missing
