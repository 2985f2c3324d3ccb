"""`hf:<org>/<repo>[@<revision>][:<file or quant>]` sources, and which files of a repository firebox
reads: pure functions over a file listing, so the hub's listing and the cache's one choose alike
(`hub.py` does the downloading). Imports nothing heavy: the command line parses these early."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

HUB_PREFIX = "hf:"
INDEX = "model.safetensors.index.json"
# What loader/hf_folder.py reads besides the weights: never other formats (.bin, .pth, .onnx, ...)
FOLDER_METADATA = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "chat_template.jinja")  # fmt: skip
# The architectures firebox/models/registry.py serves, named here because the loader may not
# import the models (they import torch); tests/loader/test_hub_ref.py keeps the two lists equal.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM",
                           "Qwen3ForCausalLM", "Qwen3MoeForCausalLM")  # fmt: skip

_SPEC = re.compile(r"hf:(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[^:@]+))?(?::(?P<file>[^:]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class HubError(Exception):
    """A Hugging Face source that cannot be had; the message says what to do about it."""


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    """`<org>/<repo>` on the Hub."""

    revision: str | None = None
    """Branch, tag or commit; `None`: the default branch."""

    file: str | None = None
    """In a GGUF repository: a file name, or a quantization tag (`Q4_K_M`) matched against them."""

    @classmethod
    def parse(cls, spec: str) -> HubRef:
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise ValueError(f"{spec!r} is not a Hugging Face source: hf:<org>/<repo>[@<revision>][:<file or quant>]")
        return cls(match["repo"], match["revision"], match["file"])

    def __str__(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        return f"{HUB_PREFIX}{self.repo_id}{revision}" + (f":{self.file}" if self.file else "")

    @property
    def is_pinned(self) -> bool:
        """The revision is a commit: what it names never changes, so the cache answers alone."""
        return self.revision is not None and _COMMIT.fullmatch(self.revision) is not None

    @property
    def stem(self) -> str:
        """A model name for it: the GGUF file's stem, else the repository's name (and the tag)."""
        repo = self.repo_id.split("/")[1]
        if self.file is None:
            return repo
        name = PurePosixPath(self.file).name
        return name[: -len(".gguf")] if name.lower().endswith(".gguf") else f"{repo}-{name}"


def is_hub_source(spec: str) -> bool:
    return spec.startswith(HUB_PREFIX)


def with_revision(spec: str, revision: str | None) -> str:
    """`spec` pinned to `revision` (`--revision`); ValueError when it names another one."""
    ref = HubRef.parse(spec)
    if revision is None or ref.revision == revision:
        return spec
    if ref.revision is not None:
        raise ValueError(f"{spec} names revision {ref.revision!r}, and --revision {revision!r}: give one")
    return str(HubRef(ref.repo_id, revision, ref.file))


def gguf_choice(ref: HubRef, listing: Collection[str]) -> str | None:
    """The GGUF file of `listing` that `ref` names, or None for a safetensors folder; HubError,
    listing the choices, when nothing or several files fit."""
    ggufs = sorted(f for f in listing if f.lower().endswith(".gguf"))
    if ref.file is None:
        if any(_is_safetensors(f) for f in listing):
            return None
        if len(ggufs) == 1:
            return ggufs[0]
        if ggufs:
            raise HubError(f"{ref} holds {len(ggufs)} GGUF files; name one as {ref}:<file or quant>, "
                           f"e.g. {ref}:Q4_K_M. Files: {', '.join(ggufs)}")  # fmt: skip
        raise HubError(f"{ref} has no safetensors weights and no GGUF file, the formats firebox reads")
    if ref.file in ggufs:
        return ref.file
    matches = [f for f in ggufs if _names(ref.file, f)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        choices = ", ".join(ggufs) or "none"
        raise HubError(f"no GGUF file of {ref.repo_id} matches {ref.file!r}; its GGUF files: {choices}")
    raise HubError(f"{ref.file!r} matches several GGUF files of {ref.repo_id}: {', '.join(matches)}; "
                   f"name one file (split GGUF files are not supported)")  # fmt: skip


def folder_files(listing: Collection[str], index: Mapping[str, Any] | None) -> list[str]:
    """What to fetch of a safetensors repository: the metadata it has, then the weights (the
    shards `index` names; else `model.safetensors`; else every top-level `.safetensors` file)."""
    if index is not None:
        weights = sorted(set(index["weight_map"].values()))
    elif "model.safetensors" in listing:
        weights = ["model.safetensors"]
    else:
        weights = sorted(f for f in listing if _is_safetensors(f))
    return [f for f in (*FOLDER_METADATA, INDEX) if f in listing] + weights


def check_architecture(ref: HubRef, config: Mapping[str, Any]) -> None:
    """HubError, naming what firebox serves, for a model of another architecture."""
    architectures = config.get("architectures") or [config.get("model_type", "unnamed")]
    if not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        raise HubError(f"{ref} is a {architectures[0]} model, which firebox does not serve; "
                       f"supported architectures: {', '.join(SUPPORTED_ARCHITECTURES)}")  # fmt: skip


def _is_safetensors(name: str) -> bool:
    return "/" not in name and name.endswith(".safetensors")


def _names(tag: str, file: str) -> bool:
    """`tag` is the file's name (any case) or one of its dot/dash-separated parts (`q4_k_m`
    fits `model-Q4_K_M.gguf`, `Q4_K` does not)."""
    name = PurePosixPath(file).name.lower()
    tag = tag.lower()
    return name in (tag, f"{tag}.gguf") or re.search(rf"(?<![a-z0-9_]){re.escape(tag)}(?![a-z0-9_])", name) is not None
