"""Read torch.distributed.checkpoint (DCP) folders without running pickled code.

DCP's own reader unpickles the ``.metadata`` file with plain ``pickle.load``, and its default load
planner reads non-tensor state (the optimizer's hyperparameters) with ``torch.load(weights_only=False)``:
a checkpoint folder planted by someone else could run any code on resume. Here the metadata is read
by an unpickler that builds only DCP's own metadata classes, ``torch.Size``, dtypes, layouts and
paths, and non-tensor state with ``weights_only=True`` (plain numbers, strings, lists, tuples)::

    check_metadata(folder)                     # UnsafeCheckpoint, with a clear message, before DCP reads it
    dcp.load(state, storage_reader=SafeReader(folder), planner=SafePlanner(), no_dist=True)

A file that asks for anything else raises :class:`UnsafeCheckpoint` before any of it runs.
"""

from __future__ import annotations

import io
import pathlib
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint._traverse import set_element

from oikyo.errors import OikyoError

_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_ALLOWED = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
            ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
            ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
            ("pathlib", "PureWindowsPath")}


class UnsafeCheckpoint(OikyoError):
    """A DCP checkpoint whose metadata asks the unpickler for something other than checkpoint metadata."""


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP metadata only: its classes, torch sizes, dtypes and layouts, paths."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                         torch.memory_format)):
            return getattr(torch, name)
        if module == _METADATA_MODULE:
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == _METADATA_MODULE:
                return found
        raise UnsafeCheckpoint(f"checkpoint metadata refers to {module}.{name}, which is not checkpoint metadata; "
                               "refusing to load it (unpickling it could run code)")


def read_metadata_file(stream) -> Any:
    """The DCP metadata in ``stream``, unpickled with :class:`_MetadataUnpickler`."""
    try:
        return _MetadataUnpickler(stream).load()
    except UnsafeCheckpoint:
        raise
    except Exception as error:  # a truncated or garbled file
        raise UnsafeCheckpoint(f"unreadable checkpoint metadata: {error.__class__.__name__}: {error}") from None


def check_metadata(folder) -> None:
    """Read ``folder``'s ``.metadata`` safely up front, so a refused file fails with a clear
    :class:`UnsafeCheckpoint` (inside ``dcp.load`` it would come wrapped in DCP's own exception)."""
    path = pathlib.Path(folder) / ".metadata"
    if path.is_file():
        with open(path, "rb") as stream:
            try:
                read_metadata_file(stream)
            except UnsafeCheckpoint as error:
                raise UnsafeCheckpoint(f"{folder}: {error}") from None


class SafeReader(FileSystemReader):
    """DCP's file reader, reading ``.metadata`` without plain ``pickle.load``."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = read_metadata_file(stream)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafePlanner(DefaultLoadPlanner):
    """DCP's default load planner, reading non-tensor values with ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpoint(f"checkpoint value {read_item.dest_index.fqn!r} is not plain data: {error}") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


