"""`/tokenize` and `/detokenize`: the same prompt path as the generation endpoints, no engine."""

from __future__ import annotations

from firebox.protocol.tokenize import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse
from firebox.serving.errors import InvalidRequestError
from firebox.serving.prompt import message_dicts, render_chat
from firebox.serving.registry import ModelHandle


def tokenize(req: TokenizeRequest, handle: ModelHandle) -> TokenizeResponse:
    tokenizer = handle.engine.tokenizer
    if req.messages is not None:
        text = render_chat(tokenizer, message_dicts(req.messages), req.add_generation_prompt)
        add_special_tokens = bool(req.add_special_tokens)
    else:
        text = req.prompt or ""
        add_special_tokens = req.add_special_tokens is not False
    ids = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=handle.engine.model_info.max_model_len)


def detokenize(req: DetokenizeRequest, handle: ModelHandle) -> DetokenizeResponse:
    tokenizer = handle.engine.tokenizer
    if any(t >= tokenizer.vocab_size for t in req.tokens):
        raise InvalidRequestError(f"token ids must be below the vocabulary size {tokenizer.vocab_size}", param="tokens")
    return DetokenizeResponse(prompt=tokenizer.decode(req.tokens, skip_special_tokens=False))
