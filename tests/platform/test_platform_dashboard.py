"""The dashboard in a real headless browser (Debian's chromium driven by Playwright): sign in,
charts drawn from seeded usage (checked on a screenshot), and the playground streaming over SSE."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from platform_helpers import LiveServer, platform_app, request_record

from firebox.platform.services import Platform
from firebox.platform.usage import insert_usage_records

playwright_sync = pytest.importorskip("playwright.sync_api")
Image = pytest.importorskip("PIL.Image")

CHROMIUM = os.environ.get("FIREBOX_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MODELS = ["accounts/fireworks/models/tiny-a", "accounts/fireworks/models/tiny-b"]
REPLY = ["Hello", " from", " the", " fake", " model", "!"]
TOKEN_BLUE = (0x1C, 0x7E, 0xD6)  # the "prompt" series colour in app.js


def _add_fake_inference(app: FastAPI, seen: list[dict]) -> None:
    @app.get("/v1/models")
    def list_models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "fireworks"} for m in MODELS]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        seen.append({"body": await request.json(), "auth": request.headers.get("authorization")})

        async def events() -> Iterator[str]:
            for piece in REPLY:
                chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
                yield f"data: {json.dumps(chunk)}\n\n"
                await asyncio.sleep(0.05)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def _seed_usage(platform: Platform) -> None:
    now = time.time()
    records = [request_record(
        f"r{hour}-{i}", account_id="acme", key_id="k1", model=MODELS[i % 2], prompt_tokens=200 + 40 * hour,
        cached_tokens=20, completion_tokens=80 + 10 * i, ttft_s=0.05 + 0.01 * i + 0.02 * hour,
        latency_s=0.8 + 0.1 * hour, created=int(now - hour * 3600 - 60))
        for hour in range(6) for i in range(4)]
    insert_usage_records(platform.database, records)


@pytest.fixture
def database_url() -> None:
    """The page does not depend on the database: SQLite only (overrides the conftest matrix)."""
    return None


@pytest.fixture
def live(platform: Platform) -> Iterator[tuple[LiveServer, str, list[dict]]]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed: run scripts/ci_browser.sh")
    platform.accounts.create_account("acme")
    platform.accounts.create_user("acme", role="user", user_id="alice")
    key = platform.keys.create("acme", "alice").key
    _seed_usage(platform)
    seen: list[dict] = []
    app = platform_app(platform)
    _add_fake_inference(app, seen)
    with LiveServer(app) as server:
        yield server, key, seen


def _count_colour(png: bytes, colour: tuple[int, int, int], tolerance: int = 12) -> tuple[int, int]:
    """(pixels of `colour`, pixels that are not white) in a screenshot."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    matching = non_white = 0
    for pixel in image.get_flattened_data():
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, colour)):
            matching += 1
        if sum(pixel) < 3 * 240:
            non_white += 1
    return matching, non_white


def test_dashboard_renders_usage_and_streams_chat(live, tmp_path: Path) -> None:
    server, key, seen = live
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server.url}/dashboard")
        page.fill("#api-key", key)
        page.click("#sign-in-form button[type=submit]")

        page.wait_for_selector("#chart-tokens rect[data-series]", timeout=15_000)
        page.wait_for_selector("#chart-latency path[data-series]", state="attached", timeout=15_000)
        page.wait_for_selector("#models-table tbody tr", timeout=15_000)
        assert page.locator("#chart-requests rect[data-series]").count() == 6  # one bar per busy hour
        rows = page.locator("#models-table tbody tr").all_inner_texts()
        assert len(rows) == 2 and all(model.split("/")[-1] in " ".join(rows) for model in MODELS)
        assert "12" in rows[0].split("\t")[1]  # 6 hours x 2 requests of each model

        chart = page.locator("#chart-tokens").screenshot(path=str(tmp_path / "tokens.png"))
        blue, non_white = _count_colour(chart, TOKEN_BLUE)
        assert blue > 500, "the prompt-token bars are not drawn"
        assert non_white > 2000

        # locator waits, not wait_for_function: the dashboard's CSP forbids evaluating strings
        playwright_sync.expect(page.locator("#model option")).to_have_count(2)
        page.select_option("#model", MODELS[1])
        page.fill("#prompt", "Say hello")
        page.click("#send")
        playwright_sync.expect(page.locator(".message.assistant")).to_have_text(
            "Hello from the fake model!", timeout=15_000
        )
        assert page.locator(".message.user").inner_text() == "Say hello"
        playwright_sync.expect(page.locator("#send")).to_be_enabled(timeout=15_000)  # the stream ended
        assert page.locator("#stop").is_disabled()
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert page.evaluate("sessionStorage.getItem('firebox.apiKey')") == key
        browser.close()
    assert errors == []
    assert seen[0]["auth"] == f"Bearer {key}"
    assert seen[0]["body"]["model"] == MODELS[1] and seen[0]["body"]["stream"] is True
    assert seen[0]["body"]["messages"] == [{"role": "user", "content": "Say hello"}]
