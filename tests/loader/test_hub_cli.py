"""`firebox pull`, `firebox models` and `firebox serve --model hf:... --revision` against the fake
hub (the server itself is replaced: tests/loader/test_hub_serve.py starts a real one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firebox.cli import app, parse_model_spec
from firebox.config import ServerConfig
from tests.loader.fake_hub import FakeHub
from tests.loader.hub_repos import GGUF, LLAMA, Weights, serving_fake_hub


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeHub, Weights]]:
    with serving_fake_hub(tmp_path, monkeypatch) as served:
        yield served


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("hf:Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b-instruct"),
        ("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "qwen2.5-0.5b-instruct-gguf-q4_k_m"),
        ("hf:org/Repo-GGUF@v2:sub/Model.Q8_0.gguf", "model.q8_0"),
    ],
)
def test_hub_models_are_named_after_the_repository_or_file(spec: str, name: str) -> None:
    assert parse_model_spec(spec) == (spec, f"accounts/fireworks/models/{name}")


def test_pull_then_models(fake: tuple[FakeHub, Weights], monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub, _ = fake
    monkeypatch.setenv("TQDM_POSITION", "-1")  # progress bars on, though stderr is no terminal here
    runner = CliRunner()
    empty = runner.invoke(app, ["models"])
    assert empty.exit_code == 0 and "no models in" in empty.stderr
    result = runner.invoke(app, ["pull", f"{GGUF}:Q8_0"])  # the hf: may be left out
    assert result.exit_code == 0, result.output
    commit = fake_hub.repos[GGUF].commit
    source, size, path = result.stdout.strip().split("\t")
    assert source == f"hf:{GGUF}@{commit}:tiny-llama-Q8_0.gguf" and path.endswith("tiny-llama-Q8_0.gguf")
    assert size.endswith("MiB") and "tiny-llama-Q8_0.gguf" in result.stderr  # the file's progress bar
    assert runner.invoke(app, ["pull", f"hf:{LLAMA}", "--revision", commit]).exit_code == 1  # not LLAMA's commit
    assert runner.invoke(app, ["pull", f"hf:{LLAMA}", "--revision", "main"]).exit_code == 0
    listing = runner.invoke(app, ["models"]).stdout.splitlines()
    assert listing[0] == "SOURCE\tSIZE\tPATH"
    assert [line.split("\t")[0] for line in listing[1:]] == [f"hf:{LLAMA}", f"hf:{GGUF}:tiny-llama-Q8_0.gguf"]


def test_pull_errors_are_one_line(fake: tuple[FakeHub, Weights]) -> None:
    result = CliRunner().invoke(app, ["pull", "hf:tiny-org/nope"])
    assert result.exit_code == 1 and result.stderr.startswith("error: no model repository tiny-org/nope on http://")
    assert CliRunner().invoke(app, ["pull", "no-org"]).exit_code == 2


def test_serve_pulls_first_and_pins_each_engine(fake: tuple[FakeHub, Weights], monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub, _ = fake
    seen: list[ServerConfig] = []
    monkeypatch.setattr("firebox.cli.run_server", lambda config, *args, **kwargs: seen.append(config))
    args = ["serve", "-m", f"hf:{LLAMA}", "-m", f"hf:{GGUF}:q8_0=tiny-gguf", "-m", "default", "--revision", "main"]
    result = CliRunner().invoke(app, args, env={"FIREBOX_API_KEY": ""})
    assert result.exit_code == 0, result.output
    models = [engine.model for engine in seen[0].engines]
    assert [m.name for m in models] == ["accounts/fireworks/models/tiny-llama", "accounts/fireworks/models/tiny-gguf",
                                        "accounts/fireworks/models/smollm2-135m-instruct"]  # fmt: skip
    llama, gguf = fake_hub.repos[LLAMA].commit, fake_hub.repos[GGUF].commit
    assert [m.source for m in models] == [f"hf:{LLAMA}@{llama}", f"hf:{GGUF}@{gguf}:tiny-llama-Q8_0.gguf", "default"]


def test_serve_refuses_what_it_cannot_pull(fake: tuple[FakeHub, Weights], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("firebox.cli.run_server", lambda *args, **kwargs: pytest.fail("the server started"))
    runner = CliRunner()
    bad_revision = runner.invoke(app, ["serve", "-m", f"hf:{GGUF}:Q8_0", "--revision", "v9"])
    assert bad_revision.exit_code == 1 and f"error: {GGUF} has no revision 'v9'" in bad_revision.stderr
    ambiguous = runner.invoke(app, ["serve", "-m", f"hf:{GGUF}"])
    assert ambiguous.exit_code == 1 and "holds 2 GGUF files" in ambiguous.stderr
    no_hub_model = runner.invoke(app, ["serve", "-m", "default", "--revision", "main"])
    assert no_hub_model.exit_code == 2 and "--revision applies to hf: models" in no_hub_model.output


def test_a_catalog_takes_hub_sources(fake: tuple[FakeHub, Weights], monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:  # fmt: skip
    fake_hub, _ = fake
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f"""
[[models]]
id = "tiny"
source = "hf:{GGUF}:Q8_0"

[[models]]
id = "tiny-dedicated"
source = "hf:{LLAMA}"
serverless = false
""")
    seen: list[ServerConfig] = []
    monkeypatch.setattr("firebox.cli.run_server", lambda config, *args, **kwargs: seen.append(config))
    result = CliRunner().invoke(app, ["serve", "--config", str(catalog)], env={"FIREBOX_API_KEY": ""})
    assert result.exit_code == 0, result.output
    pinned = f"hf:{GGUF}@{fake_hub.repos[GGUF].commit}:tiny-llama-Q8_0.gguf"
    assert [e.model.source for e in seen[0].engines] == [pinned]
    assert "model-00002-of-00002.safetensors" in fake_hub.downloads()  # the deployment-only model, for its replicas
    catalog.write_text('[[models]]\nid = "bad"\nsource = "hf:no-org"\n')
    bad = CliRunner().invoke(app, ["serve", "--config", str(catalog)])
    assert bad.exit_code == 2 and "model 'bad'" in bad.output
