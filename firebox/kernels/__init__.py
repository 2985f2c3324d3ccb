"""firebox's own CPU kernels (C++ in `csrc/`), compiled for this machine on first use.

A leaf package: the model layers and the runner both call into it.

Built with torch's cpp_extension (ninja, the system C++ compiler, `-march=native`) into firebox's
kernel cache (`~/.cache/firebox/kernels`); the build name carries a hash of the sources and of the
CPU flags, so a changed kernel or a different CPU never loads a stale binary. Where no compiler is available the callers
fall back to the portable torch kernels: `load_native()` returns False and says why in the log.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from pathlib import Path

import torch

from firebox.config import kernel_cache_dir
from firebox.kernels.cpu import cpu_flags

logger = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("paged_attention.cpp", "group_matmul.cpp", "layer_ops.cpp", "decoder_stack.cpp", "logit_mask.cpp",
           "gguf_dequant.cpp")


def _build_name() -> str:
    digest = hashlib.sha256()
    for path in sorted(CSRC.iterdir()):  # sources and headers
        digest.update(path.read_bytes())
    digest.update(" ".join(sorted(cpu_flags())).encode())
    digest.update(torch.__version__.encode())
    return f"firebox_native_{digest.hexdigest()[:16]}"


STALE_LOCK_S = 600  # a build holding its lock longer than this was killed midway


def _build_directory(name: str) -> Path:
    """firebox's own kernel cache (not torch's: finding torch's imports setuptools, a tenth of a
    second of every start), minus a lock file a killed build left behind (torch would wait on it
    forever)."""
    folder = kernel_cache_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        logger.warning("removing a stale build lock %s", lock)
        lock.unlink(missing_ok=True)
    return folder


def _load_built(library: Path) -> bool:
    """Load a library this machine already built for these sources, skipping the up-to-date
    check that `cpp_extension.load` runs through ninja (a tenth of a second of every start)."""
    if not library.is_file():
        return False
    try:
        torch.ops.load_library(str(library))
    except OSError:  # a build killed midway left a broken file: rebuild
        return False
    return True


@functools.cache
def load_native() -> bool:
    """Compile (once per machine and source version) and load the kernels; False if impossible."""
    try:
        name = _build_name()
        folder = _build_directory(name)
        if _load_built(folder / f"{name}.so"):
            return True
        from torch.utils.cpp_extension import load  # imports setuptools: only when building

        load(
            name=name,
            build_directory=str(folder),
            sources=[str(CSRC / name) for name in SOURCES],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # no compiler, no ninja, a build error: the torch kernels still work
        logger.warning("firebox's native CPU kernels are unavailable (%s); using portable torch kernels", exc)
        return False
    return True


def native_build_failed() -> bool:
    """Whether `load_native()` ran in this process and failed. Never triggers a build."""
    return load_native.cache_info().currsize > 0 and not load_native()


def has_native_op(name: str) -> bool:
    """Whether `firebox::<name>` has a CPU kernel in this process (i.e. `load_native()` ran and
    succeeded). Never triggers a build: modules decide once, when they are constructed."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"firebox::{name}", "CPU")
    except RuntimeError:  # the operator is not registered at all
        return False
