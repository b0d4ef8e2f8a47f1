"""Read PyTorch ``.pth`` state dicts into numpy without torch.

Two formats exist (torch/serialization.py):

* legacy (torch < 1.6, ``_use_new_zipfile_serialization=False``; the original YOLACT checkpoints and the
  EfficientNet-Lite0 file): five pickles in a row (magic number, protocol version, sys info, the object with
  persistent ids ``('storage', storage_type, key, location, numel, view_metadata)``, the list of storage keys),
  then for each key: int64 little-endian element count + raw little-endian data.
* zip (torch >= 1.6): an archive ``<name>/data.pkl`` (persistent ids ``('storage', storage_type, key, location,
  numel)``) with one raw file ``<name>/data/<key>`` per storage.

Tensors are rebuilt from (storage, offset, size, stride) as ``torch._utils._rebuild_tensor_v2`` does. Only plain
data is unpickled: any global other than the torch storage types, the tensor rebuild functions and
``collections.OrderedDict`` is refused (no arbitrary code runs).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchPickleError(ValueError):
    """The file is not a readable PyTorch state dict."""


class _StorageType:
    def __init__(self, name):
        if name not in _STORAGE_DTYPES:
            raise TorchPickleError(f"unsupported torch storage type {name}")
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def from_bytes(self, raw, numel):
        if self.dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2", count=numel).astype(np.uint32) << 16
            return bits.view(np.float32)
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<"), count=numel)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """numpy copy of ``storage[offset:]`` viewed with ``size`` and ``stride`` (in elements)."""
    size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
    if 0 in size:
        return np.zeros(size, storage.dtype.newbyteorder("="))
    last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
    if storage_offset < 0 or min(stride, default=0) < 0 or last >= len(storage):
        raise TorchPickleError(f"tensor of size {size} stride {stride} exceeds its storage of {len(storage)} elements")
    if not size:
        return np.array(storage[storage_offset]).astype(storage.dtype.newbyteorder("="))
    flat = storage[storage_offset:]
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat, shape=size, strides=[s * itemsize for s in stride], writeable=False)
    return np.ascontiguousarray(view).astype(view.dtype.newbyteorder("="), copy=False)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


_ALLOWED_GLOBALS = {
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Unpickler(pickle.Unpickler):
    """Unpickler that maps torch storages/tensors to numpy and refuses every other global."""

    def __init__(self, file, load_storage, rebuild=_rebuild_tensor):
        super().__init__(file)
        self._load_storage = load_storage
        self._rebuild = rebuild

    def find_class(self, module, name):
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if (module, name) in (("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2")):
            return self._rebuild
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise TorchPickleError(f"refusing to unpickle {module}.{name}: not a plain state dict")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise TorchPickleError(f"unexpected persistent id {pid!r}")
        return self._load_storage(pid)


def load_legacy(f) -> object:
    """Read a legacy (non-zip) PyTorch file object; returns the unpickled object with numpy arrays.

    Raises:
      TorchPickleError: not a legacy PyTorch file, unsupported content, or truncated data.
    """

    def read_pickle():
        return pickle.Unpickler(f).load()

    try:
        magic = read_pickle()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not this format"
        raise TorchPickleError(f"not a PyTorch file ({type(exc).__name__}: {exc})") from None
    if magic != LEGACY_MAGIC:
        raise TorchPickleError("not a PyTorch legacy file (bad magic number)")
    protocol = read_pickle()
    if protocol != LEGACY_PROTOCOL:
        raise TorchPickleError(f"unsupported PyTorch legacy protocol {protocol}")
    sys_info = read_pickle()
    if not sys_info.get("little_endian", True):
        raise TorchPickleError("big-endian PyTorch files are not supported")

    # The object pickle comes before the raw data: rebuild tensors lazily, then fill them in.
    storage_types = {}
    pending = []

    def load_storage(pid):
        if len(pid) != 6:
            raise TorchPickleError(f"unexpected legacy storage id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        storage_types.setdefault(key, (storage_type, int(numel)))
        offset = 0
        if view_metadata is not None:
            _view_key, offset, _view_size = view_metadata
        return ("__storage__", key, int(offset))

    def rebuild(storage, storage_offset, size, stride, *unused):
        holder = [storage, storage_offset, size, stride, None]
        pending.append(holder)
        return _Lazy(holder)

    obj = _Unpickler(f, load_storage, rebuild).load()
    keys = read_pickle()
    arrays = {}
    for key in keys:
        if key not in storage_types:
            raise TorchPickleError(f"storage {key} listed but never referenced")
        storage_type, numel = storage_types[key]
        header = f.read(8)
        if len(header) != 8:
            raise TorchPickleError("truncated PyTorch file (storage header)")
        (count,) = struct.unpack("<q", header)
        raw = f.read(count * storage_type.itemsize)
        if len(raw) != count * storage_type.itemsize:
            raise TorchPickleError(f"truncated PyTorch file (storage {key}: {count} elements expected)")
        arrays[key] = storage_type.from_bytes(raw, count)
    for holder in pending:
        (_, key, view_offset), storage_offset, size, stride, _ = holder
        if key not in arrays:
            raise TorchPickleError(f"storage {key} has no data")
        holder[4] = _rebuild_tensor(arrays[key], view_offset + storage_offset, size, stride)
    return _resolve(obj)


class _Lazy:
    def __init__(self, holder):
        self.holder = holder


def _resolve(obj):
    """Replace the lazy tensors of a (nested dict/list of) unpickled object by their arrays."""
    if isinstance(obj, _Lazy):
        return obj.holder[4]
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def load_zip(path) -> object:
    """Read a zip-format PyTorch file; returns the unpickled object with numpy arrays.

    Raises:
      TorchPickleError: no data.pkl in the archive, unsupported content, or a missing storage file.
    """
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if not pkl:
            raise TorchPickleError(f"{path}: zip file without data.pkl (not a PyTorch checkpoint)")
        root = pkl[0][: -len("data.pkl")]
        cache = {}

        def load_storage(pid):
            _, storage_type, key, _location, numel = pid[:5]
            if key not in cache:
                try:
                    raw = zf.read(f"{root}data/{key}")
                except KeyError:
                    raise TorchPickleError(f"{path}: storage data/{key} missing") from None
                cache[key] = storage_type.from_bytes(raw, len(raw) // storage_type.itemsize)
            return cache[key]

        return _Unpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def load(path) -> object:
    """Read a ``.pth`` file in either format (zip detected by its header) without torch.

    Returns the unpickled object (usually an OrderedDict name -> numpy array, native byte order).

    Raises:
      TorchPickleError: unreadable or unsupported file.
      FileNotFoundError: no such file.
    """
    path = str(path)
    if zipfile.is_zipfile(path):
        return load_zip(path)
    with open(path, "rb") as f:
        return load_legacy(f)
