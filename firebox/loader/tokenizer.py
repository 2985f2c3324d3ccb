"""The tokenizer every layer shares: a thin wrapper over Hugging Face `tokenizers` (Rust).

Torch-free, so the serving layer may use it. Built from a `tokenizer.json` or from GGUF metadata
(`loader/gguf_tokenizer.py`); either way the chat template and special tokens travel with it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers.decoders import DecodeStream


@dataclass(frozen=True)
class SpecialTokens:
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    add_bos_token: bool = False  # prepend BOS when encoding raw text with special tokens
    add_eos_token: bool = False
    extra_eos_tokens: tuple[str, ...] = field(default_factory=tuple)  # e.g. <|eot_id|> besides </s>


class Tokenizer:
    def __init__(
        self,
        backend: HFTokenizer,
        special: SpecialTokens,
        chat_template: str | None = None,
    ) -> None:
        self._backend = backend
        self.special = special
        self.chat_template = chat_template

    @classmethod
    def from_file(
        cls, path: str | Path, special: SpecialTokens, chat_template: str | None = None
    ) -> Tokenizer:
        return cls(HFTokenizer.from_file(str(path)), special, chat_template)

    # --- ids and sizes ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str | None) -> int | None:
        return None if token is None else self._backend.token_to_id(token)

    @cached_property
    def bos_token_id(self) -> int | None:
        return self.token_to_id(self.special.bos_token)

    @cached_property
    def eos_token_ids(self) -> tuple[int, ...]:
        names = (self.special.eos_token, *self.special.extra_eos_tokens)
        ids = (self.token_to_id(name) for name in names)
        return tuple(dict.fromkeys(i for i in ids if i is not None))

    @cached_property
    def special_token_ids(self) -> frozenset[int]:
        return frozenset(self._backend.token_to_id(t.content) for t in self._backend.get_added_tokens_decoder().values() if t.special)

    def to_json(self) -> str:
        """The whole tokenizer as `tokenizer.json` text (what llguidance builds its own from)."""
        return self._backend.to_str()

    # --- text <-> ids ----------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. Special-token text inside it (e.g. `<|im_start|>`) maps to the
        special token, as chat templates need; `add_special_tokens` adds BOS/EOS as the model asks."""
        ids = self._backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens:
            if self.special.add_bos_token and self.bos_token_id is not None:
                ids = [self.bos_token_id, *ids]
            if self.special.add_eos_token and self.eos_token_ids:
                ids = [*ids, self.eos_token_ids[0]]
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_stream(self, prefix_ids: Sequence[int] = (), skip_special_tokens: bool = True) -> IncrementalDecoder:
        return IncrementalDecoder(self._backend, prefix_ids, skip_special_tokens)

    # --- per-token views (logprobs) --------------------------------------------------------

    def token_text(self, token_id: int) -> str:
        """The token as text, as OpenAI shows it in logprobs (may hold U+FFFD for a partial
        UTF-8 character; `token_bytes` has the exact bytes)."""
        return self._backend.decode([token_id], skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        return _token_bytes(self._backend, token_id)


class IncrementalDecoder:
    """UTF-8-safe streaming decode: `step` returns text only once it forms whole characters."""

    def __init__(self, backend: HFTokenizer, prefix_ids: Sequence[int], skip_special_tokens: bool) -> None:
        self._backend = backend
        self._stream = DecodeStream(ids=list(prefix_ids) or None, skip_special_tokens=skip_special_tokens)

    def step(self, token_id: int) -> str:
        return self._stream.step(self._backend, token_id) or ""


@functools.cache
def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def gpt2_byte_encoder() -> dict[int, str]:
    """GPT-2's byte-to-unicode table: how byte-level BPE vocabularies spell each byte."""
    return {b: ch for ch, b in _gpt2_byte_decoder().items()}


def _token_bytes(backend: HFTokenizer, token_id: int) -> bytes:
    piece = backend.id_to_token(token_id)
    if piece is None:
        return b""
    if getattr(backend.model, "byte_fallback", False):  # SentencePiece: "▁word" pieces and <0xNN> bytes
        if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            return bytes([int(piece[3:5], 16)])
        return piece.replace("\u2581", " ").encode("utf-8")
    table = _gpt2_byte_decoder()
    if all(ch in table for ch in piece):
        return bytes(table[ch] for ch in piece)
    return backend.decode([token_id], skip_special_tokens=False).replace("\u2581", " ").encode("utf-8")
