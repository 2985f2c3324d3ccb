"""Issue 13's benchmark parts: the prefill phase of cpu_vs_llamacpp.sh and the Llama-shaped model
that benchmarks/realistic_model.py writes (no llama-quantize, no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.prefill import measure_prefill, prefill_document
from benchmarks.realistic_model import SHAPES, copy_tokenizer, random_tensor, tensor_shapes, tokenizer_gguf_path
from benchmarks.side_by_side import app, compare_rows

LEVELS = {1: {"concurrency": 1, "output_throughput": 30.0, "ttft_ms": {"p50": 40.0}}}


def prefill(tokens_per_s: float, other_pct: float = 1.0) -> dict[str, Any]:
    return {"prompt_tokens": 1000, "prefill_tokens_per_s": tokens_per_s, "cpu_share": {"other": other_pct}}


def test_prefill_row_has_issue_13s_target() -> None:
    rows = {r.metric: r for r in compare_rows(LEVELS, LEVELS, (1.0, 1.0), (prefill(120.0), prefill(80.0, 25.0)))}
    row = rows["prefill tok/s, 1000-token prompt"]
    assert row.ratio == pytest.approx(1.5) and row.is_met and row.target == ">= 1.5x"
    assert row.other_work_pct == (1.0, 25.0)
    slow = compare_rows(LEVELS, LEVELS, (1.0, 1.0), (prefill(55.5), prefill(80.7)))
    assert [r.is_met for r in slow if r.metric.startswith("prefill")] == [False]
    assert not any(r.metric.startswith("prefill") for r in compare_rows(LEVELS, LEVELS, (1.0, 1.0)))


def test_compare_command_takes_both_prefill_files_or_neither(tmp_path: Path) -> None:
    levels = tmp_path / "levels.json"
    levels.write_text(json.dumps({"levels": list(LEVELS.values())}))
    fb, lc = tmp_path / "fb.json", tmp_path / "lc.json"
    fb.write_text(json.dumps(prefill(100.0)))
    lc.write_text(json.dumps(prefill(50.0)))
    base = ["compare", "--firebox", str(levels), "--llamacpp", str(levels), "--firebox-startup", "1"]
    base += ["--llamacpp-startup", "1", "--out-dir", str(tmp_path)]
    result = CliRunner().invoke(app, [*base, "--firebox-prefill", str(fb), "--llamacpp-prefill", str(lc)])
    assert result.exit_code == 0, result.output
    row = "| prefill tok/s, 1000-token prompt | 100.0 | 50.0 | 2.00x | >= 1.5x | yes |"
    assert row in (tmp_path / "summary.md").read_text()
    assert CliRunner().invoke(app, [*base, "--firebox-prefill", str(fb)]).exit_code != 0


def fake_server(bodies: list[dict[str, Any]], cached: int = 0) -> httpx.Client:
    """A client whose server answers every completion with the prompt's word count as its tokens."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        num_tokens = len(body["prompt"].split())
        usage = {"prompt_tokens": num_tokens, "completion_tokens": 1}
        return httpx.Response(200, json={"usage": usage, "timings": {"prompt_n": num_tokens - cached}})

    return httpx.Client(base_url="http://server", transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("server", ["firebox", "llamacpp"])
def test_prefill_sends_fresh_uncached_prompts_and_skips_the_warmup(server: str) -> None:
    bodies: list[dict[str, Any]] = []
    samples = measure_prefill(fake_server(bodies), "m", server, prompt_len=200, num_requests=3, warmup=1, seed=0)
    assert len(bodies) == 4 and len(samples) == 3
    assert len({b["prompt"] for b in bodies}) == 4  # no two prompts share a prefix worth caching
    assert all(b["max_tokens"] == 1 and len(b["prompt"].split()) == 200 for b in bodies)
    if server == "llamacpp":
        assert all(b["cache_prompt"] is False for b in bodies)
    else:
        assert len({b["prompt_cache_isolation_key"] for b in bodies}) == 4 and "cache_prompt" not in bodies[0]
    document = prefill_document(server, 200, samples)
    assert document["prompt_tokens"] == 200 and document["prefill_tokens_per_s"] > 0
    assert document["client_cpu_s"] > 0


def test_prefill_refuses_a_cached_prompt() -> None:
    with pytest.raises(RuntimeError, match="cached"):
        measure_prefill(fake_server([], cached=16), "m", "llamacpp", prompt_len=50, num_requests=1, warmup=0, seed=0)


def test_shapes_are_llama_3_2s() -> None:
    tensors = dict(tensor_shapes(SHAPES["1b"], 49152, is_tied=True))
    assert "output.weight" not in tensors and len(tensors) == 2 + 16 * 9
    assert tensors["blk.0.attn_k.weight"] == (512, 2048) and tensors["blk.15.ffn_down.weight"] == (2048, 8192)
    num_params = sum(int(np.prod(dims)) for dims in tensors.values())
    assert 1.05e9 < num_params < 1.1e9  # Llama-3.2-1B: 1.24B, of which 0.16B more embeddings (128k vocabulary)
    untied = dict(tensor_shapes(SHAPES["3b"], 49152, is_tied=False))
    assert untied["output.weight"] == (49152, 3072) and untied["blk.27.attn_q.weight"] == (3072, 3072)


def test_random_weights_are_seeded_by_name_and_small() -> None:
    a = random_tensor("blk.0.ffn_up.weight", (2500, 64), seed=0)  # more rows than one chunk
    assert a.dtype == np.float16 and np.array_equal(a, random_tensor("blk.0.ffn_up.weight", (2500, 64), seed=0))
    assert not np.array_equal(a, random_tensor("blk.0.ffn_gate.weight", (2500, 64), seed=0))
    assert not np.array_equal(a, random_tensor("blk.0.ffn_up.weight", (2500, 64), seed=1))
    assert float(a.astype(np.float32).std()) == pytest.approx(0.02, rel=0.02)
    norm = random_tensor("blk.0.attn_norm.weight", (64,), seed=0)
    assert norm.dtype == np.float32 and (norm == 1).all()


def test_the_tokenizer_is_copied_byte_for_byte(tmp_path: Path) -> None:
    from gguf import GGUFReader, GGUFWriter

    source = GGUFReader(tokenizer_gguf_path())
    writer = GGUFWriter(tmp_path / "t.gguf", "llama")
    assert copy_tokenizer(source, writer) == 49152
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    copy = GGUFReader(tmp_path / "t.gguf")
    keys = [k for k in source.fields if k.startswith("tokenizer.")]
    assert keys == [k for k in copy.fields if k.startswith("tokenizer.")] and "tokenizer.chat_template" in keys
    for key in keys:
        original, copied = source.fields[key], copy.fields[key]
        assert original.types == copied.types, key
        assert all(bytes(original.parts[i]) == bytes(copied.parts[j]) for i, j in zip(original.data, copied.data)), key
