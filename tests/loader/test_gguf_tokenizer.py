"""Tokenizers rebuilt from GGUF metadata, checked against transformers' own GGUF tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGUFWriter

from firebox.loader.gguf_file import GGUFFile
from firebox.loader.gguf_tokenizer import gguf_tokenizer
from firebox.loader.source import ModelSource
from firebox.loader.tokenizer import Tokenizer
from tests.loader.loader_builders import EOS_TOKEN, add_byte_level_vocab, write_spm_tokenizer

CORPUS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "12345 3.14 and 1,000,000 or 0.5e-3",
    "def add(a, b):\n    if a:\n        return a + b\n\treturn None  # done\n",
    "emoji 😀🎉👍🏽 and CJK 中文字符 日本語のテキスト 한국어",
    "  leading and trailing spaces   ",
    "\n\nnew\nlines\r\nand\ttabs\n",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say WE'VE done it, don't you?",
    "naïve café — “quotes” … €100 ¥50",
    "",
]


@pytest.fixture(scope="module")
def default_tokenizer(default_source: ModelSource) -> Tokenizer:
    return default_source.tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("text", CORPUS)
def test_default_ids_equal_transformers(default_tokenizer: Tokenizer, reference_tokenizer, text: str) -> None:
    assert default_tokenizer.encode(text) == reference_tokenizer(text, add_special_tokens=False).input_ids


@pytest.mark.slow
@pytest.mark.parametrize("text", CORPUS)
def test_default_decode_inverts_encode(default_tokenizer: Tokenizer, text: str) -> None:
    assert default_tokenizer.decode(default_tokenizer.encode(text), skip_special_tokens=False) == text


@pytest.mark.slow
def test_default_digits_are_single_tokens(default_tokenizer: Tokenizer) -> None:
    ids = default_tokenizer.encode("2024")
    assert [default_tokenizer.token_text(i) for i in ids] == ["2", "0", "2", "4"]


@pytest.mark.slow
def test_default_special_tokens_and_template(default_tokenizer: Tokenizer) -> None:
    assert default_tokenizer.encode("<|im_start|>user\nhi<|im_end|>") == [1, 4093, 198, 6004, 2]
    assert default_tokenizer.special.bos_token == "<|im_start|>" and default_tokenizer.bos_token_id == 1
    assert default_tokenizer.eos_token_ids == (2,)
    assert default_tokenizer.special.add_bos_token is False
    assert default_tokenizer.encode("hi", add_special_tokens=True) == default_tokenizer.encode("hi")
    assert default_tokenizer.special_token_ids == frozenset(range(17))
    assert default_tokenizer.vocab_size == 49152
    assert "<|im_start|>" in default_tokenizer.chat_template and "messages" in default_tokenizer.chat_template
    assert default_tokenizer.decode([1, 4093, 2]) == "user"  # specials skipped by default


@pytest.mark.slow
@pytest.mark.parametrize("text", ["😀", "👍🏽", "ひらがな", "Ω", "한국어"])
def test_default_token_bytes_of_a_split_character(default_tokenizer: Tokenizer, text: str) -> None:
    ids = default_tokenizer.encode(text)
    assert len(ids) > 1  # the character spans tokens
    assert b"".join(default_tokenizer.token_bytes(i) for i in ids) == text.encode("utf-8")


@pytest.mark.slow
def test_default_stream_decoding_never_emits_half_a_character(default_tokenizer: Tokenizer) -> None:
    text = "Emoji 😀🎉 split, 中文 too 👍🏽!"
    decoder = default_tokenizer.decode_stream()
    pieces = [decoder.step(i) for i in default_tokenizer.encode(text)]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == text


def test_sentencepiece_vocabulary_matches_transformers(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    write_spm_tokenizer(tmp_path / "spm.gguf")
    ours = gguf_tokenizer(GGUFFile(tmp_path / "spm.gguf").metadata)
    reference = AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    texts = ["hello world", "hello  world", "héllo wörld", "new\nline", "<s>hello</s>", "<tool> hello", "a<tool>b"]
    for text in texts:
        assert ours.encode(text) == reference(text, add_special_tokens=False).input_ids, text
        assert ours.decode(ours.encode(text), skip_special_tokens=False) == text
    assert ours.encode("hello", add_special_tokens=True) == reference("hello").input_ids == [1, 273]
    ids = ours.encode("héllo")  # ▁h, then é as byte-fallback pieces <0xC3> <0xA9>
    assert b"".join(ours.token_bytes(i) for i in ids) == " héllo".encode()
    assert ours.special.unk_token == "<unk>" and ours.eos_token_ids == (2,)


def _byte_level_with_digit_merges(path: Path, pre: str) -> Tokenizer:
    writer = GGUFWriter(str(path), "llama")
    add_byte_level_vocab(writer, pre=pre, extra_tokens=("12", "123", "45"), merges=("1 2", "12 3", "4 5"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return gguf_tokenizer(GGUFFile(path).metadata)


@pytest.mark.parametrize(
    ("pre", "pieces"),
    [
        ("llama-bpe", ["123", "45"]),  # digits in groups of up to three
        ("smollm", ["1", "2", "3", "4", "5"]),  # every digit alone
        ("qwen2", ["1", "2", "3", "4", "5"]),
        ("default", ["123", "45"]),  # GPT-2: a run of digits is one word
    ],
)
def test_pre_tokenizer_follows_the_file(tmp_path: Path, pre: str, pieces: list[str]) -> None:
    tokenizer = _byte_level_with_digit_merges(tmp_path / "t.gguf", pre)
    assert [tokenizer.token_text(i) for i in tokenizer.encode("12345")] == pieces
    assert tokenizer.encode(EOS_TOKEN) == [256] and 256 in tokenizer.special_token_ids


def test_unknown_tokenizer_model_is_refused() -> None:
    with pytest.raises(ValueError, match="tokenizer model 'rwkv' is not supported"):
        gguf_tokenizer({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})
