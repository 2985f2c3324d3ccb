"""How a decoder model's layers run, chosen by name at load from a small registry.

- `native`: kernels' DecoderStack, one C++ call per step over the same weights (native_stack.py);
- `python`: the nn.Module layers (`DecoderModel.run_layers`), the reference, which run any model.

`choose_layer_stack` takes the first entry of `PREFERENCE` that applies; each entry before the
last says why it does not, and that reason travels with the choice so the runner can log it: a
model change cannot fall off the fast path unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

import torch

from firebox.models.decoder import DecoderForCausalLM, LayerStack
from firebox.models.native_stack import NativeStackBackend


@dataclass(frozen=True, slots=True)
class StackTarget:
    """What a layer stack runs over."""

    model: DecoderForCausalLM
    attention_backend: str  # AttentionBackend.name: the metadata and KV layout each step brings
    kv_caches: list[torch.Tensor]  # one per layer
    block_size: int


class LayerStackBackend(Protocol):
    """One way of running a model's layers."""

    description: str  # for the load log, e.g. "native decoder stack"
    requirements: str  # what it needs, logged as the reason when it is chosen first

    def unsupported_reason(self, target: StackTarget) -> str | None:
        """Why this backend cannot run `target` exactly as the Python layers do; None if it can."""
        ...

    def build(self, target: StackTarget) -> LayerStack:
        """The stack over `target`'s weights and KV tensors (only where `unsupported_reason` is None)."""
        ...


class PythonStackBackend:
    description = "Python layers"
    requirements = "runs every model"

    def unsupported_reason(self, target: StackTarget) -> str | None:
        return None

    def build(self, target: StackTarget) -> LayerStack:
        return target.model.model.run_layers


LAYER_STACKS: Mapping[str, LayerStackBackend] = MappingProxyType(
    {"native": NativeStackBackend(), "python": PythonStackBackend()}
)
PREFERENCE = ("native", "python")  # fastest first; the last one applies to every model


@dataclass(frozen=True, slots=True)
class StackChoice:
    name: str  # key in LAYER_STACKS
    description: str
    reason: str  # why this one: the earlier entries' reasons for declining, or its requirements
    stack: LayerStack


def choose_layer_stack(target: StackTarget, preference: tuple[str, ...] = PREFERENCE) -> StackChoice:
    declined: list[str] = []
    for name in preference:
        backend = LAYER_STACKS[name]
        reason = backend.unsupported_reason(target)
        if reason is None:
            why = "; ".join(declined) or backend.requirements
            return StackChoice(name, backend.description, why, backend.build(target))
        declined.append(f"no {backend.description}: {reason}")
    raise ValueError(f"no layer stack in {preference} runs {target.model.config.architecture}: {'; '.join(declined)}")
