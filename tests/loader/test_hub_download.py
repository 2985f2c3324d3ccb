"""`hf:` sources against a fake hub on loopback (tests/loader/fake_hub.py): only the needed files
come down, pinned sources and a stopped hub use the cache, a broken download resumes, and each
failure says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants

from firebox.config import EngineConfig, ModelConfig
from firebox.engine.describe import describe_model
from firebox.loader import hub
from firebox.loader.hub_ref import HubError
from firebox.loader.source import load_source
from tests.loader.fake_hub import FakeHub
from tests.loader.hub_repos import GATED, GGUF, LLAMA, LLAMA_FILES, UNSUPPORTED, serving_fake_hub


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, dict[str, np.ndarray]]]:
    with serving_fake_hub(tmp_path, monkeypatch) as served:
        yield served


def test_safetensors_repo_fetches_only_what_firebox_reads(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    fake_hub, weights = fake
    pulled = hub.pull(f"hf:{LLAMA}")
    commit = fake_hub.repos[LLAMA].commit
    assert pulled.source == f"hf:{LLAMA}@{commit}" and pulled.path.name == commit
    assert sorted(fake_hub.downloads()) == sorted(LLAMA_FILES)
    assert {p.name for p in pulled.path.iterdir()} == LLAMA_FILES
    source = load_source(ModelConfig(source=pulled.source))
    assert source.arch.architecture == "LlamaForCausalLM" and source.generation_defaults == {"temperature": 0.6}
    assert source.tokenizer.chat_template is not None and source.description == f"safetensors {pulled.path}"
    loaded = {name: tensor.numpy() for name, tensor in source.weights()}
    assert loaded.keys() == weights.keys() and all(np.array_equal(loaded[n], w) for n, w in weights.items())


def test_second_resolution_is_a_cache_hit_even_without_the_hub(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    fake_hub, _ = fake
    pinned = hub.pull(f"hf:{LLAMA}").source
    fake_hub.requests.clear()
    describe_model(EngineConfig(model=ModelConfig(source=pinned, name="accounts/x/models/y")))  # the API process
    assert fake_hub.requests == []  # pinned: no network at all
    fake_hub.stop()
    assert hub.pull(f"hf:{LLAMA}").source == pinned  # the hub cannot be reached: the cache answers
    constants.HF_HUB_OFFLINE = True  # (the fixture restores it)
    assert load_source(ModelConfig(source=f"hf:{LLAMA}")).arch.architecture == "LlamaForCausalLM"


def test_gguf_by_quant_tag_fetches_one_file(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    fake_hub, _ = fake
    source = load_source(ModelConfig(source=f"hf:{GGUF}:q4_k_m"))
    assert source.description.startswith("GGUF ") and source.description.endswith("tiny-llama-Q4_K_M.gguf")
    assert fake_hub.downloads() == ["tiny-llama-Q4_K_M.gguf"]
    assert hub.pull(f"hf:{GGUF}:tiny-llama-Q8_0.gguf").path.name == "tiny-llama-Q8_0.gguf"
    with pytest.raises(HubError, match=r"holds 2 GGUF files; name one .* tiny-llama-Q4_K_M.gguf, tiny-llama-Q8_0"):
        hub.pull(f"hf:{GGUF}")
    with pytest.raises(HubError, match=r"no GGUF file of .* matches 'Q5_K_S'; its GGUF files: tiny-llama-Q4_K_M"):
        hub.pull(f"hf:{GGUF}:Q5_K_S")


def test_revisions(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    fake_hub, _ = fake
    commit = fake_hub.repos[GGUF].commit
    assert hub.pull(f"hf:{GGUF}@{commit}:Q8_0").source == f"hf:{GGUF}@{commit}:tiny-llama-Q8_0.gguf"
    with pytest.raises(HubError, match=f"{GGUF} has no revision 'v9'"):
        hub.pull(f"hf:{GGUF}@v9:Q8_0")


def test_a_broken_download_resumes_where_it_stopped(
    fake: tuple[FakeHub, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub, _ = fake
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256)  # huggingface_hub keeps whole chunks (10 MB)
    fake_hub.cut_after["tiny-llama-Q8_0.gguf"] = 1000
    path = hub.pull(f"hf:{GGUF}:Q8_0").path
    assert path.read_bytes() == (fake_hub.repos[GGUF].folder / "tiny-llama-Q8_0.gguf").read_bytes()
    ranges = [r for m, p, r in fake_hub.requests if m == "GET" and p.endswith("Q8_0.gguf")]
    assert ranges == [None, "bytes=768-"]  # the second GET asks for the rest: after the 3 chunks kept


def test_an_interrupted_pull_keeps_the_files_it_finished(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    fake_hub, _ = fake
    fake_hub.fail.add("model-00002-of-00002.safetensors")
    with pytest.raises(HubError, match="500"):
        hub.pull(f"hf:{LLAMA}")
    done = set(fake_hub.downloads()) - fake_hub.fail
    fake_hub.fail.clear()
    fake_hub.requests.clear()
    hub.pull(f"hf:{LLAMA}")
    again = set(fake_hub.downloads())
    assert again == {"model-00002-of-00002.safetensors"} and not again & done


def test_unknown_repo(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    with pytest.raises(HubError, match=r"no model repository tiny-org/nope on http://127.0.0.1:\d+: check the name"):
        hub.pull("hf:tiny-org/nope")


def test_gated_repo_wants_a_token(fake: tuple[FakeHub, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HubError, match=rf"hf:{GATED}:Q8_0 is gated: accept its terms on .*, then set HF_TOKEN"):
        hub.pull(f"hf:{GATED}:Q8_0")
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert hub.pull(f"hf:{GATED}:Q8_0").path.name == "tiny-llama-Q8_0.gguf"


def test_no_network_and_nothing_cached(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    fake[0].stop()
    with pytest.raises(HubError, match=r"cannot reach .* not in the cache .* set HF_HUB_OFFLINE=1"):
        hub.pull(f"hf:{LLAMA}")
    constants.HF_HUB_OFFLINE = True
    with pytest.raises(HubError, match=rf"HF_HUB_OFFLINE is set and hf:{LLAMA} is not in the cache"):
        hub.pull(f"hf:{LLAMA}")


def test_unsupported_architecture_is_refused_before_the_weights(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    with pytest.raises(HubError, match=r"GPT2LMHeadModel model, which firebox does not serve; supported .*Qwen3"):
        hub.pull(f"hf:{UNSUPPORTED}")
    assert fake[0].downloads() == ["config.json"]


def test_not_enough_disk(fake: tuple[FakeHub, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "free_bytes", lambda folder: 100)
    with pytest.raises(HubError, match=r"not enough disk space for .*: 0.1 MiB to download, 0.0 MiB free in .*HF_HOME"):
        hub.pull(f"hf:{GGUF}:Q8_0")
    assert fake[0].downloads() == []


def test_cached_models_lists_what_was_pulled(fake: tuple[FakeHub, dict[str, np.ndarray]]) -> None:
    assert hub.cached_models() == []
    folder = hub.pull(f"hf:{LLAMA}")
    gguf = hub.pull(f"hf:{GGUF}:Q8_0")
    rows = {row.source: row for row in hub.cached_models()}
    assert rows.keys() == {f"hf:{LLAMA}", f"hf:{GGUF}:tiny-llama-Q8_0.gguf"}
    assert rows[f"hf:{LLAMA}"].size == folder.size and rows[f"hf:{LLAMA}"].path == folder.path
    assert rows[f"hf:{GGUF}:tiny-llama-Q8_0.gguf"].size == gguf.size > 0
