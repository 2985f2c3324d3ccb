"""firebox: a self-hostable inference platform with its own engine and a Fireworks-compatible API.

`from firebox import LLM, SamplingParams` gives the offline API; `LLM` (and torch with it) is
imported on first use so that `import firebox` stays light for the HTTP layer.
"""

from typing import TYPE_CHECKING, Any

from firebox.engine.types import SamplingParams

if TYPE_CHECKING:
    from firebox.offline import LLM

__all__ = ["LLM", "SamplingParams"]


def __getattr__(name: str) -> Any:
    if name == "LLM":
        from firebox.offline import LLM

        return LLM
    raise AttributeError(f"module 'firebox' has no attribute {name!r}")
