"""`hf:` sources parsed, and which files of a repository firebox takes (no network, no cache)."""

from __future__ import annotations

import pytest

from firebox.loader.hub_ref import (
    SUPPORTED_ARCHITECTURES,
    HubError,
    HubRef,
    check_architecture,
    folder_files,
    gguf_choice,
    with_revision,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GGUFS = ["Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Qwen2.5-0.5B-Instruct-Q4_K_S.gguf", "Qwen2.5-0.5B-Instruct-Q8_0.gguf",
         "README.md"]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "ref"),
    [
        ("hf:Qwen/Qwen2.5-0.5B-Instruct", HubRef("Qwen/Qwen2.5-0.5B-Instruct")),
        ("hf:org/repo-GGUF:Q4_K_M", HubRef("org/repo-GGUF", None, "Q4_K_M")),
        ("hf:org/repo@v1.0:sub/x.gguf", HubRef("org/repo", "v1.0", "sub/x.gguf")),
        (f"hf:org/repo@{COMMIT}", HubRef("org/repo", COMMIT)),
    ],
)
def test_specs_parse_and_print_back(spec: str, ref: HubRef) -> None:
    assert HubRef.parse(spec) == ref and str(ref) == spec


@pytest.mark.parametrize("spec", ["hf:repo-without-org", "hf:a/b/c", "org/repo", "hf:org/repo@", "hf:org/repo:"])
def test_malformed_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"hf:<org>/<repo>"):
        HubRef.parse(spec)


def test_pinned_and_stem() -> None:
    assert HubRef("o/r", COMMIT).is_pinned and not HubRef("o/r", "main").is_pinned
    assert HubRef("o/Repo-GGUF", None, "Q4_K_M").stem == "Repo-GGUF-Q4_K_M"
    assert HubRef("o/r", None, "sub/Model.Q8_0.gguf").stem == "Model.Q8_0"
    assert HubRef("o/r").stem == "r"


def test_revision_flag() -> None:
    assert with_revision("hf:o/r:Q8_0", "v2") == "hf:o/r@v2:Q8_0"
    assert with_revision("hf:o/r@v2", "v2") == "hf:o/r@v2" and with_revision("hf:o/r", None) == "hf:o/r"
    with pytest.raises(ValueError, match="give one"):
        with_revision("hf:o/r@v1", "v2")


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("q4_k_m", "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"),  # tags match whatever their case
        ("Q8_0", "Qwen2.5-0.5B-Instruct-Q8_0.gguf"),
        ("Qwen2.5-0.5B-Instruct-Q4_K_S.gguf", "Qwen2.5-0.5B-Instruct-Q4_K_S.gguf"),
        ("qwen2.5-0.5b-instruct-q4_k_s", "Qwen2.5-0.5B-Instruct-Q4_K_S.gguf"),
    ],
)
def test_gguf_file_by_name_or_quant_tag(file: str, expected: str) -> None:
    assert gguf_choice(HubRef("o/r", None, file), GGUFS) == expected


def test_gguf_choice_errors_list_the_choices() -> None:
    with pytest.raises(HubError, match=r"holds 3 GGUF files; name one .*Q4_K_M.gguf, .*Q8_0.gguf"):
        gguf_choice(HubRef("o/r"), GGUFS)
    with pytest.raises(HubError, match=r"no GGUF file of o/r matches 'Q5_K_M'; its GGUF files: .*Q4_K_S.gguf"):
        gguf_choice(HubRef("o/r", None, "Q5_K_M"), GGUFS)
    with pytest.raises(HubError, match="no GGUF file of o/r matches 'Q4_K'"):
        gguf_choice(HubRef("o/r", None, "Q4_K"), GGUFS)  # Q4_K is neither Q4_K_M nor Q4_K_S
    split = ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"]
    with pytest.raises(HubError, match=r"matches several GGUF files .*\(split GGUF files are not supported\)"):
        gguf_choice(HubRef("o/r", None, "Q8_0"), split)
    with pytest.raises(HubError, match="no safetensors weights and no GGUF file"):
        gguf_choice(HubRef("o/r"), ["pytorch_model.bin", "config.json"])


def test_one_gguf_or_safetensors_need_no_name() -> None:
    assert gguf_choice(HubRef("o/r"), ["only.gguf", "README.md"]) == "only.gguf"
    assert gguf_choice(HubRef("o/r"), ["model.safetensors", "config.json", "x.gguf"]) is None


def test_folder_files_take_the_index_shards_and_no_other_format() -> None:
    listing = ["config.json", "tokenizer.json", "tokenizer.model", "pytorch_model.bin", "consolidated.safetensors",
               "model.safetensors.index.json", "a.safetensors", "b.safetensors", "onnx/model.safetensors"]  # fmt: skip
    index = {"weight_map": {"x": "a.safetensors", "y": "b.safetensors", "z": "a.safetensors"}}
    assert folder_files(listing, index) == ["config.json", "tokenizer.json", "model.safetensors.index.json",
                                            "a.safetensors", "b.safetensors"]  # fmt: skip
    assert folder_files(["config.json", "model.safetensors", "consolidated.safetensors"], None)[-1:] == [
        "model.safetensors"
    ]
    assert folder_files(["config.json", "x.safetensors", "onnx/y.safetensors"], None) == [
        "config.json", "x.safetensors"
    ]


def test_unsupported_architecture_names_the_supported_ones() -> None:
    check_architecture(HubRef("o/r"), {"architectures": ["Qwen3ForCausalLM"]})
    with pytest.raises(HubError, match=r"is a GPT2LMHeadModel model, .*supported architectures: LlamaForCausalLM"):
        check_architecture(HubRef("o/r"), {"architectures": ["GPT2LMHeadModel"]})


def test_supported_architectures_are_the_registry_s() -> None:
    from firebox.models.registry import supported_architectures

    assert tuple(sorted(SUPPORTED_ARCHITECTURES)) == supported_architectures()
