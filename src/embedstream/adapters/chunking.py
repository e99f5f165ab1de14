"""Token-aware chunking with the embedding model's own (fast) tokenizer.

A document is tokenized once. Chunks are windows of at most ``chunk_tokens`` tokens;
the next window starts ``overlap`` tokens before the previous one ends, moved back to
the start of a word. A window never ends inside a word unless a single word is longer
than a whole window. Chunk text is sliced from the original
string with the tokenizer's offset mapping, so it keeps the document's own spelling,
case and spacing (no detokenization artefacts). The token count of each chunk (model
input length, special tokens included) travels with it for the embedder's batch budget.

This module needs only the ``tokenizers`` package: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a document: ``text == document[start:end]``."""

    index: int
    text: str
    start: int
    end: int
    tokens: int
    """model input length of the chunk, special tokens included"""


class Chunker:
    """Splits texts into token windows. Owns a private copy of the tokenizer with
    truncation and padding off, so it never contends with the model's tokenizer and is
    safe to call from several threads."""

    def __init__(self, tokenizer: Tokenizer, *, chunk_tokens: int, overlap: int) -> None:
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
        if not 0 <= overlap < chunk_tokens:
            raise ValueError(
                f"chunk_overlap must be at least 0 and below chunk_tokens ({chunk_tokens}), "
                f"got {overlap}"
            )
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self.special_tokens = special_token_count(self._tokenizer)

    def split(self, text: str) -> list[Chunk]:
        """The chunks of one text; none for a text without tokens (e.g. whitespace)."""
        return self._windows(text, self._encode([text])[0])

    def split_many(self, texts: Sequence[str]) -> list[list[Chunk]]:
        """``split`` for several texts, tokenized in one call (parallel, off the GIL)."""
        return [
            self._windows(text, enc) for text, enc in zip(texts, self._encode(texts), strict=True)
        ]

    def _encode(self, texts: Sequence[str]) -> list[Encoding]:
        if not texts:
            return []
        encodings: list[Encoding] = self._tokenizer.encode_batch(
            list(texts), add_special_tokens=False
        )
        return encodings

    def _windows(self, text: str, enc: Encoding) -> list[Chunk]:
        offsets: list[tuple[int, int]] = enc.offsets
        words: list[int | None] = enc.word_ids
        total = len(offsets)
        chunks: list[Chunk] = []
        start = 0
        while start < total:
            end = min(start + self.chunk_tokens, total)
            if end < total:
                end = _word_start_at_or_before(words, end, floor=start + 1)
            first, last = offsets[start][0], offsets[end - 1][1]
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=text[first:last],
                    start=first,
                    end=last,
                    tokens=end - start + self.special_tokens,
                )
            )
            if end >= total:
                break
            start = _next_start(words, end - self.overlap, floor=start + 1, ceil=end)
        return chunks


def special_token_count(tokenizer: Tokenizer) -> int:
    """How many special tokens (e.g. [CLS] and [SEP]) the tokenizer adds to one text."""
    return len(tokenizer.encode("", add_special_tokens=True).ids)


def _same_word(words: list[int | None], i: int) -> bool:
    """True when token ``i`` continues the word of token ``i - 1``."""
    return words[i] is not None and words[i] == words[i - 1]


def _word_start_at_or_before(words: list[int | None], i: int, *, floor: int) -> int:
    """Move a cut back to the start of the word it falls in; a word longer than the
    window (nothing at or above ``floor``) is cut where it is."""
    cut = i
    while cut > floor and _same_word(words, cut):
        cut -= 1
    return i if _same_word(words, cut) else cut


def _next_start(words: list[int | None], i: int, *, floor: int, ceil: int) -> int:
    """Where the next window starts: ``i`` moved back to the start of its word (so the
    overlap is at least the configured one), or forward to the next word start when
    going back would not advance past ``floor``; never beyond ``ceil``."""
    i = min(max(i, floor), ceil)
    back = i
    while back > floor and _same_word(words, back):
        back -= 1
    if not _same_word(words, back):
        return back
    while i < ceil and _same_word(words, i):
        i += 1
    return i
