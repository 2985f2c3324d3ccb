"""Hugging Face model folders: `config.json`, `generation_config.json`, tokenizer files and
safetensors weights (one file or shards listed by `model.safetensors.index.json`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firebox.loader.tokenizer import SpecialTokens, Tokenizer

if TYPE_CHECKING:  # torch is imported where weights are read, not where a model is described
    import torch

SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "typical_p")


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def generation_defaults(folder: Path) -> tuple[dict[str, float], tuple[int, ...]]:
    """Sampling defaults and EOS ids from `generation_config.json` (both empty without one)."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return {}, ()
    cfg = read_json(path)
    defaults = {key: float(cfg[key]) for key in SAMPLING_KEYS if cfg.get(key) is not None}
    eos = cfg.get("eos_token_id")
    eos_ids = (eos,) if isinstance(eos, int) else tuple(eos or ())
    return defaults, eos_ids


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file()


def hf_tokenizer(folder: Path) -> Tokenizer:
    """`tokenizer.json` with the special tokens and chat template of `tokenizer_config.json`
    (a separate `chat_template.jinja` wins, as in transformers)."""
    if not has_tokenizer(folder):
        raise ValueError(f"{folder} has no tokenizer.json (only fast tokenizers are supported)")
    config_path = folder / "tokenizer_config.json"
    cfg = read_json(config_path) if config_path.is_file() else {}
    tokenizer_json = read_json(folder / "tokenizer.json")
    special = SpecialTokens(
        bos_token=_token_content(cfg.get("bos_token")),
        eos_token=_token_content(cfg.get("eos_token")),
        pad_token=_token_content(cfg.get("pad_token")),
        unk_token=_token_content(cfg.get("unk_token")),
        add_bos_token=bool(cfg.get("add_bos_token", _post_processor_adds_bos(tokenizer_json, cfg))),
        add_eos_token=bool(cfg.get("add_eos_token", False)),
    )
    return Tokenizer.from_file(folder / "tokenizer.json", special, _chat_template(folder, cfg))


def _token_content(token: str | dict[str, Any] | None) -> str | None:
    return token.get("content") if isinstance(token, dict) else token


def _post_processor_adds_bos(tokenizer_json: dict[str, Any], cfg: dict[str, Any]) -> bool:
    """Without an `add_bos_token` flag, BOS is added when the post-processor's single-sequence
    template starts with the BOS token (Llama-style `TemplateProcessing`)."""
    bos = _token_content(cfg.get("bos_token"))
    processor = tokenizer_json.get("post_processor") or {}
    processors = processor.get("processors", [processor]) if processor.get("type") == "Sequence" else [processor]
    for proc in processors:
        single = proc.get("single") or []
        if proc.get("type") == "TemplateProcessing" and single and "SpecialToken" in single[0]:
            return single[0]["SpecialToken"]["id"] == bos
    return False


def _chat_template(folder: Path, cfg: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        named = {entry["name"]: entry["template"] for entry in template}
        return named.get("default", next(iter(named.values()), None))
    return template


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files: the shards the index names, `model.safetensors`, or every
    `*.safetensors` in the folder."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = dict.fromkeys(read_json(index)["weight_map"].values())
        return [folder / shard for shard in shards]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} has no safetensors weights (pytorch_model.bin is not supported)")
    return files


def iter_safetensors_weights(
    files: list[Path], progress: Callable[[int, int], None] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of every file in its stored dtype, read lazily one at a time."""
    from safetensors import safe_open

    handles = [safe_open(str(path), framework="pt") for path in files]
    total = sum(len(handle.keys()) for handle in handles)
    done = 0
    for handle in handles:
        for name in handle.keys():
            tensor = handle.get_tensor(name)
            done += 1
            if progress is not None:
                progress(done, total)
            yield name, tensor
