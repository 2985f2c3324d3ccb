"""Loading Hugging Face checkpoint tensors into our (fused, stacked) parameters.

Our modules fuse q|k|v and gate|up along the output axis and stack MoE experts along a leading
axis. A `WeightRule` maps an HF name onto such a parameter: the named group `part` picks the
slice of a fused parameter (in the order of `parts`), the group `expert` the index of a stacked
one. Names no rule matches load into the parameter of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from firebox.loader.quantized import QuantizedTensor, WeightTensor, dense


@dataclass(frozen=True, slots=True)
class WeightRule:
    pattern: re.Pattern[str]  # full match over the HF name
    target: str  # `Match.expand` template giving our parameter name
    parts: tuple[str, ...] = ()  # values of the group `part`, in fused order


def weight_rule(pattern: str, target: str, parts: Sequence[str] = ()) -> WeightRule:
    return WeightRule(re.compile(pattern), target, tuple(parts))


@dataclass(frozen=True, slots=True)
class WeightTarget:
    name: str  # our parameter name
    expert: int | None = None  # index along a stacked expert axis
    part: int | None = None  # which part of a fused output axis


def resolve_weight_name(name: str, rules: Sequence[WeightRule]) -> WeightTarget:
    for rule in rules:
        match = rule.pattern.fullmatch(name)
        if match is None:
            continue
        groups = match.groupdict()
        expert = int(groups["expert"]) if groups.get("expert") is not None else None
        part = rule.parts.index(groups["part"]) if rule.parts else None
        return WeightTarget(match.expand(rule.target), expert, part)
    return WeightTarget(name)


def collect_part_sizes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Full parameter name -> row sizes of its fused parts, from modules that declare them."""
    sizes: dict[str, tuple[int, ...]] = {}
    for prefix, sub in module.named_modules():
        declare = getattr(sub, "weight_part_sizes", None)
        if declare is not None:
            for local, parts in declare().items():
                sizes[f"{prefix}.{local}" if prefix else local] = parts
    return sizes


def _destination(
    param: torch.Tensor, target: WeightTarget, part_sizes: dict[str, tuple[int, ...]]
) -> torch.Tensor:
    dest = param.data
    if target.expert is not None:
        dest = dest[target.expert]
    if target.part is not None:
        sizes = part_sizes.get(target.name)
        if sizes is None:
            raise ValueError(f"parameter {target.name!r} has no fused parts")
        dest = dest.narrow(0, sum(sizes[: target.part]), sizes[target.part])
    return dest


# (our parameter name, fused part index or None, the checkpoint tensor) -> True if it took the
# tensor, which then is not copied into the parameter (weight_kernels packs quantized layers so).
WeightSink = Callable[[str, int | None, WeightTensor], bool]


def load_named_weights(
    module: nn.Module,
    weights: Iterable[tuple[str, WeightTensor]],
    rules: Sequence[WeightRule],
    ignore: re.Pattern[str] | None = None,
    sink: WeightSink | None = None,
) -> None:
    """Copy every checkpoint tensor into its parameter (or hand it to `sink`); raise on unknown
    names, wrong shapes, or parameters that no tensor filled."""
    params = dict(module.named_parameters())
    part_sizes = collect_part_sizes(module)
    loaded: set[str] = set()
    for name, tensor in weights:
        if ignore is not None and ignore.fullmatch(name):
            continue
        target = resolve_weight_name(name, rules)
        param = params.get(target.name)
        if param is None:
            raise ValueError(f"checkpoint tensor {name!r} matches no parameter of {type(module).__name__}")
        dest = _destination(param, target, part_sizes)
        if dest.shape != tensor.shape:
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, expected {tuple(dest.shape)}"
            )
        if sink is None or target.expert is not None or not sink(target.name, target.part, tensor):
            _fill(param, dest, dense(tensor), owned=isinstance(tensor, QuantizedTensor))
        loaded.add(target.name)
    missing = sorted(params.keys() - loaded)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[:5]}")


def _fill(param: nn.Parameter, dest: torch.Tensor, value: torch.Tensor, owned: bool) -> None:
    """Copy `value` into `dest`, or, where `value` is memory nothing else holds (`owned`: a matrix
    just dequantized from GGUF blocks) and is the whole parameter in its dtype and layout, take
    that memory instead: copying a 1B model's 400 MB embedding cost a tenth of a second a start."""
    whole = dest.data_ptr() == param.data_ptr() and dest.shape == param.shape
    if owned and whole and value.dtype == param.dtype and value.is_contiguous() and value.device == param.device:
        param.data = value
        return
    with torch.no_grad():
        dest.copy_(value)
