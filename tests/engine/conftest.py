from __future__ import annotations

import pytest
from engine_fakes import EOS, build_tokenizer

from firebox.loader.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    tok = build_tokenizer()
    assert tok.eos_token_ids == (EOS,)  # the fake model's EOS is the tokenizer's
    return tok
