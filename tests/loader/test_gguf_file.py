from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

from firebox.loader.gguf_file import GGUFFile


def _write_every_kind(path: Path) -> dict[str, np.ndarray]:
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -100)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_uint64("t.u64", 2**63 + 5)
    writer.add_int64("t.i64", -(2**62))
    writer.add_float32("t.f32", 1.5)
    writer.add_float64("t.f64", 3.141592653589793)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo 😀")
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.floats", [0.5, -1.25])
    writer.add_array("t.strs", ["a", "", "ü"])
    writer.add_key_value("t.bools", [True, False], GGUFValueType.ARRAY, sub_type=GGUFValueType.BOOL)
    tensors = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f16": np.arange(64, dtype=np.float16).reshape(2, 32),
        "q8": quants.quantize(np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64), GGMLQuantizationType.Q8_0),
    }
    writer.add_tensor("f32", tensors["f32"])
    writer.add_tensor("f16", tensors["f16"])
    writer.add_tensor("q8", tensors["q8"], raw_dtype=GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def test_reads_every_value_type_and_tensor(tmp_path: Path) -> None:
    path = tmp_path / "kinds.gguf"
    tensors = _write_every_kind(path)
    file = GGUFFile(path)
    meta = file.metadata
    assert (meta["t.u8"], meta["t.i8"], meta["t.u16"], meta["t.i16"]) == (200, -100, 60000, -30000)
    assert (meta["t.u32"], meta["t.i32"]) == (4_000_000_000, -2_000_000_000)
    assert (meta["t.u64"], meta["t.i64"]) == (2**63 + 5, -(2**62))
    assert meta["t.f32"] == 1.5 and meta["t.f64"] == 3.141592653589793 and meta["t.bool"] is True
    assert meta["t.str"] == "héllo 😀"
    assert meta["t.ints"] == [1, 2, 3] and meta["t.floats"] == [0.5, -1.25]
    assert meta["t.strs"] == ["a", "", "ü"] and meta["t.bools"] == [True, False]
    assert meta["general.architecture"] == "llama"
    assert file.tensors["f32"].shape == (3, 4) and file.tensors["f32"].ggml_type == GGMLQuantizationType.F32
    assert file.tensors["q8"].shape == (2, 64) and file.tensors["q8"].ggml_type == GGMLQuantizationType.Q8_0
    for name, array in tensors.items():
        assert file.tensor_bytes(file.tensors[name]).tobytes() == array.tobytes()


def test_tensor_bytes_are_private_to_the_process(tmp_path: Path) -> None:
    path = tmp_path / "kinds.gguf"
    _write_every_kind(path)
    before = path.read_bytes()
    view = GGUFFile(path).tensor_bytes(GGUFFile(path).tensors["f32"])
    view[:] = 0  # a copy-on-write mapping: writable, never written back
    assert path.read_bytes() == before


def test_rejects_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ValueError, match="not a GGUF"):
        GGUFFile(path)


def test_rejects_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "kinds.gguf"
    _write_every_kind(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match="truncated"):
        GGUFFile(path)


@pytest.mark.slow
def test_matches_gguf_reader_on_the_default_model(default_gguf: Path) -> None:
    ours, reference = GGUFFile(default_gguf), GGUFReader(default_gguf)
    for key, field in reference.fields.items():
        if not key.startswith("GGUF."):
            assert ours.metadata[key] == field.contents(), key
    assert len(ours.tensors) == len(reference.tensors) == 272
    for tensor in reference.tensors:
        info = ours.tensors[tensor.name]
        assert info.shape == tuple(int(n) for n in reversed(tensor.shape))
        assert info.ggml_type == tensor.tensor_type
        assert np.array_equal(ours.tensor_bytes(info), tensor.data.view(np.uint8).reshape(-1))
