"""A firebox `Tokenizer` rebuilt from GGUF metadata, without transformers.

A GGUF file carries no `tokenizer.json`: it stores the vocabulary, merges, token types and
special-token ids under llama.cpp's `tokenizer.ggml.*` keys. `tokenizer.ggml.model` says which
algorithm (`gpt2`: byte-level BPE; `llama`: SentencePiece BPE with byte fallback) and
`tokenizer.ggml.pre` which pre-tokenizer split the merges were learned on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from firebox.loader.tokenizer import SpecialTokens, Tokenizer, gpt2_byte_encoder

_TOKEN_TYPE_UNKNOWN, _TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED = 2, 3, 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def gguf_tokenizer(metadata: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer a GGUF file describes, with its special tokens and chat template."""
    kind = metadata.get("tokenizer.ggml.model")
    builder = _BACKEND_BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"GGUF tokenizer model {kind!r} is not supported (supported: {sorted(_BACKEND_BUILDERS)})")
    backend = builder(metadata)
    _add_marked_tokens(backend, metadata)
    return Tokenizer(backend, _special_tokens(metadata), metadata.get("tokenizer.chat_template"))


# --- byte-level BPE (tokenizer.ggml.model == "gpt2") -------------------------------------------


def _byte_level_backend(metadata: Mapping[str, Any]) -> HFTokenizer:
    spelling = gpt2_byte_encoder()
    alphabet = set(spelling.values())

    def respell(token: str) -> str:  # a token outside the byte alphabet is stored as raw text
        return token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))

    vocab = {respell(token): index for index, token in enumerate(metadata["tokenizer.ggml.tokens"])}
    backend = HFTokenizer(models.BPE(vocab, _merges(metadata), fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = _byte_level_pre_tokenizer(metadata.get("tokenizer.ggml.pre", "default"))
    backend.decoder = decoders.ByteLevel()
    return backend


def _byte_level_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    """The split the vocabulary's merges were learned on; unknown names get GPT-2's regex."""
    if pre == "smollm":  # as SmolLM2's own tokenizer.json: every digit its own token
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    split = _SPLIT_REGEXES.get(pre)
    if split is None:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


_SPLIT_REGEXES = {
    "llama-bpe": _LLAMA3_SPLIT,
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "falcon3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}


# --- SentencePiece (tokenizer.ggml.model == "llama") -------------------------------------------


def _sentencepiece_backend(metadata: Mapping[str, Any]) -> HFTokenizer:
    """BPE over `▁`-marked pieces with byte fallback, as Llama's `tokenizer.json` has it."""
    tokens = metadata["tokenizer.ggml.tokens"]
    vocab = {token: index for index, token in enumerate(tokens)}
    unk_id = metadata.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else None
    backend = HFTokenizer(models.BPE(vocab, _merges(metadata), unk_token=unk, fuse_unk=True, byte_fallback=True))
    add_prefix = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if add_prefix else "never", split=False
    )
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _merges(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The file's merges, or (SentencePiece files often have none) ones implied by the scores."""
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is not None:
        return [tuple(merge.split(" ", 1)) for merge in merges]
    scores = metadata.get("tokenizer.ggml.scores")
    if scores is None:  # e.g. a byte-level vocabulary without merges: characters only
        return []
    return merges_from_scores(metadata["tokenizer.ggml.tokens"], scores)


def merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a piece into two vocabulary pieces, best-scored piece first (the order
    SentencePiece's BPE applies them; same rule as transformers' `generate_merges`)."""
    vocab = {token: index for index, token in enumerate(tokens)}
    ranked: list[tuple[str, str, float]] = []
    for piece, score in dict(zip(tokens, scores)).items():
        halves = ((piece[:i], piece[i:]) for i in range(1, len(piece)))
        splits = [(left, right, score) for left, right in halves if left in vocab and right in vocab]
        ranked.extend(sorted(splits, key=lambda s: (vocab[s[0]], vocab[s[1]])))
    ranked.sort(key=lambda s: (s[2], len(s[0]), len(s[1])), reverse=True)
    return [(left, right) for left, right, _ in ranked]


# --- special tokens ----------------------------------------------------------------------------


def _add_marked_tokens(backend: HFTokenizer, metadata: Mapping[str, Any]) -> None:
    """Control tokens (`<|im_start|>`) become special added tokens and user-defined ones
    (`<think>`) plain added tokens, so text holding them maps to them whole."""
    tokens = metadata["tokenizer.ggml.tokens"]
    token_types = metadata.get("tokenizer.ggml.token_type") or ()
    byte_level = metadata.get("tokenizer.ggml.model") == "gpt2"
    alphabet = set(gpt2_byte_encoder().values())
    special, plain = [], []
    for token, token_type in zip(tokens, token_types):
        if token_type in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_UNKNOWN):
            # a byte-level "control" token outside the byte alphabet is a llama.cpp mislabel
            if not byte_level or set(token) <= alphabet:
                special.append(AddedToken(token, special=True, normalized=False))
        elif token_type == _TOKEN_TYPE_USER_DEFINED and backend.token_to_id(token) is not None:
            plain.append(AddedToken(token, special=False, normalized=False))
    backend.add_special_tokens(special)
    backend.add_tokens(plain)


def _special_tokens(metadata: Mapping[str, Any]) -> SpecialTokens:
    tokens = metadata["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    eos = token("eos_token_id")
    extra_eos = tuple(t for t in (token("eot_token_id"), token("eom_token_id")) if t is not None and t != eos)
    is_sentencepiece = metadata.get("tokenizer.ggml.model") == "llama"
    return SpecialTokens(
        bos_token=token("bos_token_id"),
        eos_token=eos,
        pad_token=token("padding_token_id"),
        unk_token=token("unknown_token_id"),
        # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise
        add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", is_sentencepiece)),
        add_eos_token=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
        extra_eos_tokens=tuple(dict.fromkeys(extra_eos)),
    )


_BACKEND_BUILDERS: dict[str, Callable[[Mapping[str, Any]], HFTokenizer]] = {
    "gpt2": _byte_level_backend,
    "llama": _sentencepiece_backend,
}
