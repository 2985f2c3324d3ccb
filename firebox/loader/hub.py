"""Models from the Hugging Face Hub, downloaded through `huggingface_hub` into its cache (so
`HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` work as everywhere else).

`pull(spec)` fetches only what firebox reads (one GGUF file, or a safetensors folder's weights,
config and tokenizer files) and returns the source pinned to the commit it got. A pinned source
resolves from the cache without the network: `firebox serve` pulls once, then its engine and API
processes both open the pinned source."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_token, hf_hub_download, scan_cache_dir
from huggingface_hub.errors import (
    CacheNotFound,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import httpx  # the HTTP module huggingface_hub speaks (httpx2 from 2.0 on)
from huggingface_hub.utils import tqdm as hub_tqdm

from firebox.loader.hf_folder import read_json
from firebox.loader.hub_ref import INDEX, HubError, HubRef, check_architecture, folder_files, gguf_choice

logger = logging.getLogger(__name__)

# No route to the hub: fall back to the cache, or say how to work offline
_NETWORK_ERRORS = (httpx.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError)


@dataclass(frozen=True)
class Pulled:
    source: str
    """The source pinned to its commit: `hf:<org>/<repo>@<commit>[:<file>]`."""

    path: Path
    """The GGUF file, or the snapshot folder of a safetensors model."""

    files: tuple[Path, ...]
    """Every file fetched for it."""

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files)


@dataclass(frozen=True)
class CachedModel:
    source: str
    """How to serve it: `hf:<org>/<repo>[@<revision>][:<file>]`."""

    size: int
    """Bytes on disk."""

    path: Path
    """The GGUF file or the snapshot folder."""


class _FileBar(hub_tqdm):
    """One progress bar per file, without tqdm's monitor thread: `serve` forks its engine
    processes after pulling, and forks only while it has a single thread."""

    monitor_interval = 0


def cache_dir() -> Path:
    return Path(constants.HF_HUB_CACHE)


def local_path(spec: str) -> Path:
    """The GGUF file or folder that `spec` names, downloaded first when the cache lacks it."""
    return pull(spec).path


def pull(spec: str) -> Pulled:
    """`spec` in the cache: from it alone when pinned or offline, else checked against the hub
    (which falls back to the cache when the hub cannot be reached)."""
    ref = HubRef.parse(spec)
    if ref.is_pinned or constants.HF_HUB_OFFLINE:
        cached = _from_cache(ref)
        if cached is not None:
            return cached
        if constants.HF_HUB_OFFLINE:
            raise HubError(f"HF_HUB_OFFLINE is set and {ref} is not in the cache ({cache_dir()}): pull it with "
                           f"`firebox pull {ref}` where the hub is reachable, or unset HF_HUB_OFFLINE")  # fmt: skip
    with _hub_errors(ref):
        try:
            info = HfApi().model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
        except _NETWORK_ERRORS as exc:
            cached = _from_cache(ref)
            if cached is None:
                raise
            logger.warning("cannot reach %s (%s); using the cached %s", constants.ENDPOINT, exc, cached.source)
            return cached
        return _download(ref, info)


def cached_models() -> list[CachedModel]:
    """Every model revision in the cache, a row per GGUF file in GGUF repositories."""
    try:
        cache = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return []
    rows = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified):
            refs = sorted(revision.refs)
            at = "" if "main" in refs else f"@{refs[0] if refs else revision.commit_hash}"
            ggufs = [f for f in revision.files if f.file_name.lower().endswith(".gguf")]
            for f in ggufs:
                file = f.file_path.relative_to(revision.snapshot_path).as_posix()
                rows.append(CachedModel(f"hf:{repo.repo_id}{at}:{file}", f.size_on_disk, f.file_path))
            if not ggufs:
                rows.append(CachedModel(f"hf:{repo.repo_id}{at}", revision.size_on_disk, revision.snapshot_path))
    return rows


def _download(ref: HubRef, info: Any) -> Pulled:
    """Fetch what `ref` needs at the commit `info` describes (files already there are not fetched)."""
    commit = info.sha
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
    gguf = gguf_choice(ref, sizes)
    if gguf is not None:
        files = [gguf]
    else:
        if "config.json" not in sizes:
            raise HubError(f"{ref} has safetensors weights but no config.json")
        check_architecture(ref, read_json(_fetch(ref, commit, "config.json")))
        index = read_json(_fetch(ref, commit, INDEX)) if INDEX in sizes else None
        files = folder_files(sizes, index)
    snapshot = _storage(ref) / "snapshots" / commit
    _check_disk(ref, sum(sizes.get(f, 0) for f in files if not (snapshot / f).is_file()))
    paths = tuple(_fetch(ref, commit, f) for f in files)
    _remember_ref(ref, commit)
    pinned = HubRef(ref.repo_id, commit, gguf)
    return Pulled(str(pinned), paths[0] if gguf else snapshot, paths)


def _fetch(ref: HubRef, commit: str, file: str) -> Path:
    # At the commit, not the branch: every file of one pull comes from the same commit
    return Path(hf_hub_download(ref.repo_id, file, revision=commit, tqdm_class=_FileBar))


def _from_cache(ref: HubRef) -> Pulled | None:
    """`ref` from the cache alone, when every file it needs is there."""
    storage = _storage(ref)
    revision = ref.revision or constants.DEFAULT_REVISION
    commit = revision if ref.is_pinned else _read_text(storage / "refs" / revision)
    snapshot = storage / "snapshots" / (commit or "-")
    if commit is None or not snapshot.is_dir():
        return None
    listing = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    try:
        gguf = gguf_choice(ref, listing)
    except HubError:  # nothing (or too much) fits in the cache: the hub may know better
        return None
    index = read_json(snapshot / INDEX) if gguf is None and (snapshot / INDEX).is_file() else None
    files = [gguf] if gguf else folder_files(listing, index)
    if not all((snapshot / f).is_file() for f in files) or (gguf is None and "config.json" not in files):
        return None
    pinned = HubRef(ref.repo_id, commit, gguf)
    return Pulled(str(pinned), snapshot / gguf if gguf else snapshot, tuple(snapshot / f for f in files))


def _storage(ref: HubRef) -> Path:
    """The repository's folder in the cache (the layout huggingface_hub documents: refs/, blobs/,
    snapshots/<commit>/)."""
    return cache_dir() / repo_folder_name(repo_id=ref.repo_id, repo_type="model")


def _remember_ref(ref: HubRef, commit: str) -> None:
    """Record branch -> commit in refs/, as snapshot_download does: downloads by commit do not,
    and an offline start looks the branch up there."""
    revision = ref.revision or constants.DEFAULT_REVISION
    if revision != commit:
        path = _storage(ref) / "refs" / revision
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(commit)


def _check_disk(ref: HubRef, needed: int) -> None:
    cache = cache_dir()
    folder = next(p for p in (cache, *cache.parents) if p.exists())
    free = free_bytes(folder)
    if needed > free:
        raise HubError(f"not enough disk space for {ref}: {human_size(needed)} to download, {human_size(free)} free "
                       f"in {cache}; free some space, or point HF_HOME (or HF_HUB_CACHE) at a larger disk")  # fmt: skip


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


@contextmanager
def _hub_errors(ref: HubRef) -> Iterator[None]:
    """huggingface_hub's exceptions as HubErrors that say what to do."""
    page = f"{constants.ENDPOINT}/{ref.repo_id}"
    try:
        yield
    except GatedRepoError as exc:  # before RepositoryNotFoundError, its base class
        if get_token() is None:
            message = f"{ref} is gated: accept its terms on {page}, then set HF_TOKEN (or run `hf auth login`)"
        else:
            message = f"{ref} is gated and the token in use has no access to it: accept its terms on {page}"
        raise HubError(message) from exc
    except RepositoryNotFoundError as exc:
        raise HubError(f"no model repository {ref.repo_id} on {constants.ENDPOINT}: check the name "
                       "(a private repository needs HF_TOKEN)") from exc  # fmt: skip
    except RevisionNotFoundError as exc:
        raise HubError(f"{ref.repo_id} has no revision {ref.revision!r}") from exc
    except RemoteEntryNotFoundError as exc:
        raise HubError(f"{ref}: a file is missing on the hub ({exc})") from exc
    except HfHubHTTPError as exc:  # after the ones above, its subclasses
        raise HubError(f"{ref}: the hub answered with an error ({exc}); try again later") from exc
    except _NETWORK_ERRORS as exc:
        raise HubError(f"cannot reach {constants.ENDPOINT} for {ref}, and it is not in the cache "
                       f"({cache_dir()}): check the network (or HF_ENDPOINT, for a mirror). "
                       f"Without network: `firebox pull {ref}` on a machine with it, copy the cache over "
                       "and set HF_HUB_OFFLINE=1") from exc  # fmt: skip


def _read_text(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def human_size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
