"""The architecture registry and the model contract's failure modes."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from firebox.engine.runner.attention.torch_ref import TorchAttentionBackend
from firebox.loader.arch_config import ArchConfig
from firebox.models.registry import get_model_class, supported_architectures
from tests.models.helpers import arch_config_of, make_hf_model

EXPECTED = {
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM",
    "MixtralForCausalLM",
}
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=32, architectures=["LlamaForCausalLM"])  # fmt: skip


def test_every_family_is_registered_under_its_hf_name() -> None:
    assert EXPECTED <= set(supported_architectures())
    for name in EXPECTED:
        assert get_model_class(name).__name__ == name


def test_unknown_architecture_lists_supported_names() -> None:
    with pytest.raises(
        ValueError, match=r"unsupported model architecture 'GPT2LMHeadModel'.*LlamaForCausalLM"
    ):
        get_model_class("GPT2LMHeadModel")


def test_unsupported_activation_is_rejected() -> None:
    config = ArchConfig.from_hf_dict({**LlamaConfig(**TINY).to_dict(), "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        get_model_class("LlamaForCausalLM")(config, TorchAttentionBackend())


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ({"quantization_config": {"quant_method": "awq", "bits": 4}}, "quantization_config"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ({"rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.5}}, "rope_parameters"),
        ({"sliding_window": 0, "architectures": ["MistralForCausalLM"]}, "sliding_window"),
        (
            {"use_sliding_window": True, "sliding_window": 8, "layer_types": ["chunked_attention"],
             "architectures": ["Qwen2ForCausalLM"]},
            "layer_types",
        ),
    ],
)  # fmt: skip
def test_unsupported_settings_are_refused_naming_the_field(setting: dict, field: str) -> None:
    config = ArchConfig.from_hf_dict({**LlamaConfig(**TINY).to_dict(), **setting})
    with pytest.raises(ValueError, match=rf"config field {field}="):
        get_model_class(config.architecture)(config, TorchAttentionBackend())


def _fresh_pair():
    hf = make_hf_model(LlamaForCausalLM, LlamaConfig(**TINY))
    return hf, get_model_class("LlamaForCausalLM")(arch_config_of(hf), TorchAttentionBackend())


def test_load_weights_rejects_unknown_missing_and_misshapen_tensors() -> None:
    hf, ours = _fresh_pair()
    state = dict(hf.state_dict())
    with pytest.raises(ValueError, match="matches no parameter"):
        ours.load_weights([*state.items(), ("model.layers.0.self_attn.rogue.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="lacks 1 parameters"):
        ours.load_weights([(n, t) for n, t in state.items() if n != "model.norm.weight"])
    state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(3, 32)
    with pytest.raises(ValueError, match="k_proj.weight' has shape"):
        ours.load_weights(state.items())


def test_fused_projections_hold_the_hf_tensors_in_order() -> None:
    hf, ours = _fresh_pair()
    ours.load_weights(hf.state_dict().items())
    attn, hf_attn = ours.model.layers[0].self_attn, hf.model.layers[0].self_attn
    q, k, v = attn.qkv_proj.weight.split(attn.qkv_proj.output_sizes)
    assert torch.equal(q, hf_attn.q_proj.weight) and torch.equal(k, hf_attn.k_proj.weight)
    assert torch.equal(v, hf_attn.v_proj.weight)
    gate, up = ours.model.layers[0].mlp.gate_up_proj.weight.chunk(2)
    assert torch.equal(gate, hf.model.layers[0].mlp.gate_proj.weight)
    assert torch.equal(up, hf.model.layers[0].mlp.up_proj.weight)
    assert not any(p.requires_grad for p in ours.parameters())
