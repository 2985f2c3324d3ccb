"""`POST /tokenize` and `POST /detokenize`, as vLLM shapes them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from firebox.api.deps import authenticate, resolve_model
from firebox.api.replies import json_response
from firebox.protocol.tokenize import DetokenizeRequest, TokenizeRequest
from firebox.serving.tokenize import detokenize, tokenize

router = APIRouter(tags=["tokenize"], dependencies=[Depends(authenticate)])


@router.post("/tokenize")
async def tokenize_prompt(body: TokenizeRequest, request: Request) -> Response:
    return json_response(tokenize(body, resolve_model(request, body.model)))


@router.post("/detokenize")
async def detokenize_tokens(body: DetokenizeRequest, request: Request) -> Response:
    return json_response(detokenize(body, resolve_model(request, body.model)))
