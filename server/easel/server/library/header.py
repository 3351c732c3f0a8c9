"""Tensor names, shapes and dtypes of a weights file, without reading its weights.

* ``.safetensors``: the first 8 bytes give the JSON header's length; the header names every tensor
  with its dtype, shape and byte range. A file whose header or data runs past its end is
  incomplete (truncated, or still being copied); the header tells how big it will be.
* ``.gguf`` (llama.cpp's format, used for quantised transformers): read by the ``gguf`` package;
  dtypes are GGML type names (``Q8_0``, ``Q4_K``, ``F16`` …).
* ``.ckpt``/``.pt``/``.pth`` (pickles): opened with ``torch.load(weights_only=True, mmap=True)``,
  which never runs code from the file and maps the tensors without reading them. A pickle that
  needs anything but tensors and plain containers is refused (``NeedsCode``).
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MAX_HEADER = 100 * 2**20  # a real header is at most a few MB
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
GGUF_SUFFIX = ".gguf"  # llama.cpp's format: quantised transformers (read by diffusers' GGUF quantizer)
_WRAPPERS = ("state_dict", "params_ema", "params")  # what holds the tensors in a pickle (BasicSR: params_ema)
_TORCH_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
                 "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
_DTYPE_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors' names: F32, F16, BF16, ...
    shape: tuple[int, ...]


Tensors = Mapping[str, TensorInfo]


class LazyTensors(Mapping[str, TensorInfo]):
    """A safetensors header's entries as TensorInfo, made only for the names looked up (a header holds
    thousands; detection reads a handful)."""

    def __init__(self, raw: Mapping[str, Any]):
        self._raw = raw
        self.names_text: str | None = getattr(raw, "text", None)  # every name as "name":{ (detect.names_text)

    def __getitem__(self, name: str) -> TensorInfo:
        entry = self._raw[name]
        return TensorInfo(str(entry["dtype"]), tuple(entry["shape"]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, name: object) -> bool:
        return name in self._raw


@dataclass(frozen=True)
class Header:
    """What a weights file holds. ``offsets``: safetensors byte ranges (None for pickles)."""

    tensors: Mapping[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int = 0
    offsets: Mapping[str, tuple[int, int]] | None = None

    def dtypes(self) -> list[str]:
        """The file's floating-point dtypes, most common first."""
        counts: dict[str, int] = {}
        for name in self.tensors:
            dtype = self.tensors[name].dtype
            if dtype.startswith(("F", "BF")):
                counts[dtype] = counts.get(dtype, 0) + 1
        return sorted(counts, key=lambda d: -counts[d])


class HeaderError(Exception):
    """The file cannot be described; the message says why in plain words."""


class Incomplete(HeaderError):
    """The file ends before its data does: truncated, or still being copied."""

    def __init__(self, message: str, have: int, want: int | None):
        super().__init__(message)
        self.have, self.want = have, want


class NeedsCode(HeaderError):
    """A pickle that needs arbitrary code to load (refused)."""


def read_header(path: str) -> Header:
    """The header of a ``.safetensors``, pickle or GGUF file; HeaderError says what is wrong."""
    if path.lower().endswith(PICKLE_SUFFIXES):
        return read_pickle_index(path)
    if path.lower().endswith(GGUF_SUFFIX):
        return read_gguf_header(path)
    return read_safetensors_header(path)


def read_gguf_header(path: str) -> Header:
    """A GGUF file's tensors (dtype: the GGML type name, ``Q8_0``, ``F16`` …; shape in torch's order) and
    its string metadata (``general.architecture``), through the ``gguf`` package's memory-mapped reader."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise HeaderError("not a GGUF file (it does not start with 'GGUF'); it may be corrupt")
    try:
        import gguf
    except ImportError:
        raise HeaderError("a GGUF file; reading it needs the 'gguf' package: pip install gguf") from None
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError):
        raise Incomplete("its GGUF header or data is cut short (or corrupt)", size, None) from None
    tensors = {t.name: TensorInfo(t.tensor_type.name, tuple(int(n) for n in reversed(t.shape)))
               for t in reader.tensors}
    metadata = {}
    for name, field in reader.fields.items():
        value = field.contents()
        if isinstance(value, (str, int, float)):
            metadata[name] = str(value)
    return Header(tensors, metadata, int(reader.data_offset))


def read_safetensors_header(path: str) -> Header:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise Incomplete(f"only {size} bytes: not a safetensors file, or not yet copied", size, None)
        (length,) = struct.unpack("<Q", head)
        if length == 0 or length > MAX_HEADER:
            raise HeaderError("not a safetensors file (its first 8 bytes give no header length); it may be corrupt")
        if 8 + length > size:
            raise Incomplete(f"its header needs {8 + length} bytes but the file has {size}", size, None)
        raw = f.read(length)
    fast = _fast_parse(raw, size, 8 + length)
    if fast is not None:
        return fast
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HeaderError("its safetensors header is not valid JSON; the file is corrupt") from None
    if not isinstance(data, dict):
        raise HeaderError("its safetensors header is not a JSON object; the file is corrupt")
    return _parse(data, size, 8 + length)


def _parse(data: dict[str, Any], size: int, start: int) -> Header:
    metadata = data.pop("__metadata__", None) or {}
    try:
        last, end = max(((n, e["data_offsets"][1]) for n, e in data.items()), key=lambda t: t[1], default=("", 0))
        if last:
            _check_entry(last, data[last])
    except (KeyError, TypeError, IndexError, ValueError):
        raise HeaderError("its header entries have no valid dtype/shape/offsets; the file is corrupt") from None
    if start + end > size:
        raise Incomplete(f"{size / 2**20:.1f} of {(start + end) / 2**20:.1f} MiB present", size, start + end)
    meta = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return Header(LazyTensors(data), meta, start, _Offsets(data))


_END = re.compile(rb'"data_offsets":\[\d+,(\d+)\]')


def _fast_parse(raw: bytes, size: int, start: int) -> Header | None:
    """Index a compact header (as the safetensors library writes it) without decoding every entry: the
    tensor names by splitting at ``":{`` and the data's end by one regular expression, both at C speed;
    an entry is decoded when looked up (detection needs a handful). None (decode it all with json)
    when the header is laid out otherwise."""
    metadata: dict[str, str] = {}
    body = raw
    meta_at = raw.find(b'"__metadata__":{')
    if meta_at >= 0:
        try:
            text = raw.decode("utf-8")
            value, end = json.JSONDecoder().raw_decode(text, text.index("{", text.index('"__metadata__"')))
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        metadata = {str(k): str(v) for k, v in value.items()}
        end = len(text[:end].encode("utf-8"))
        body = raw[:meta_at] + b" " * (end - meta_at) + raw[end:]  # blanked: its strings may hold anything
    count = body.count(b'":{')
    ends = _END.findall(body)
    if count < 1 or len(ends) != count:
        return None
    try:
        entries = _RawEntries(body.decode("utf-8"), count)
    except UnicodeDecodeError:
        return None
    last_end = max(map(int, ends))
    if start + last_end > size:
        raise Incomplete(f"{size / 2**20:.1f} of {(start + last_end) / 2**20:.1f} MiB present", size, start + last_end)
    return Header(LazyTensors(entries), metadata, start, _Offsets(entries))


class _RawEntries(Mapping[str, dict[str, Any]]):
    """Header entries decoded on demand from the header text (where each name appears as "name":{)."""

    def __init__(self, text: str, count: int):
        self.text, self._count = text, count
        self._names: list[str] | None = None

    def __getitem__(self, name: str) -> dict[str, Any]:
        key = f'"{name}":{{'
        at = self.text.find(key)
        if at < 0:
            raise KeyError(name)
        at += len(key) - 1
        try:
            return json.loads(self.text[at: self.text.index("}", at) + 1])
        except ValueError:
            raise HeaderError(f"its header entry {name!r} is not valid JSON; the file is corrupt") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and f'"{name}":{{' in self.text

    def __iter__(self) -> Iterator[str]:
        if self._names is None:
            self._names = [p[p.rindex('"') + 1:] for p in self.text.split('":{')[:-1]]
        return iter(self._names)

    def __len__(self) -> int:
        return self._count


def _check_entry(name: str, entry: dict[str, Any]) -> None:
    """The last tensor's byte range must fit its shape and dtype (a cheap corruption check)."""
    dtype, shape, (lo, hi) = str(entry["dtype"]), [int(n) for n in entry["shape"]], entry["data_offsets"]
    count = 1
    for n in shape:
        count *= n
    if int(hi) < int(lo) or (dtype in _DTYPE_BYTES and int(hi) - int(lo) != count * _DTYPE_BYTES[dtype]):
        raise HeaderError(f"tensor {name!r} has {int(hi) - int(lo)} bytes for shape {shape} {dtype}; the file is corrupt")


class _Offsets(Mapping[str, tuple[int, int]]):
    def __init__(self, raw: dict[str, Any]):
        self._raw = raw

    def __getitem__(self, name: str) -> tuple[int, int]:
        lo, hi = self._raw[name]["data_offsets"]
        return int(lo), int(hi)

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def read_floats(path: str, header: Header, name: str) -> list[float]:
    """The values of one small float tensor of a safetensors file (F32/F16/BF16), read by offset."""
    if header.offsets is None or name not in header.offsets:
        raise KeyError(name)
    lo, hi = header.offsets[name]
    dtype = header.tensors[name].dtype
    with open(path, "rb") as f:
        f.seek(header.data_start + lo)
        raw = f.read(hi - lo)
    if dtype == "F32":
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if dtype == "F16":
        return list(struct.unpack(f"<{len(raw) // 2}e", raw))
    if dtype == "BF16":  # the upper half of a float32
        halves = struct.unpack(f"<{len(raw) // 2}H", raw)
        return list(struct.unpack(f"<{len(halves)}f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))))
    raise ValueError(f"tensor {name!r} is {dtype}, not a float tensor")


def read_pickle_index(path: str) -> Header:
    """Names and shapes of a zip-format torch checkpoint, loaded only with ``weights_only=True``."""
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("data.pkl") for n in archive.namelist()):
                raise HeaderError("it is a zip file but not a torch checkpoint")
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic[:1] == b"\x80":
            raise HeaderError("it is an old-style (torch < 1.6) pickle, which Easel does not read; convert it to "
                              ".safetensors") from None
        raise Incomplete(f"{size / 2**20:.1f} MiB and no zip directory at its end: truncated, still being "
                         "copied, or not a checkpoint", size, None) from None
    state = load_pickle(path, mmap=True)
    return Header({k: TensorInfo(_TORCH_DTYPES.get(str(v.dtype).removeprefix("torch."), str(v.dtype)),
                                 tuple(v.shape)) for k, v in state.items()}, {})


def load_pickle(path: str, mmap: bool = False) -> dict[str, Any]:
    """A pickle checkpoint's state dict (unwrapping ``state_dict``, or an upscaler's ``params_ema``), with ``torch.load(weights_only=True)``.

    NeedsCode when the pickle names anything beyond tensors and plain containers."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise NeedsCode(_needs_code(path, str(exc))) from None
    except RuntimeError as exc:
        raise HeaderError(f"torch cannot read it ({str(exc).splitlines()[0][:200]}); the file may be corrupt") from None
    while isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in _WRAPPERS):
        obj = next(obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict))
    if not isinstance(obj, dict):
        raise HeaderError(f"it holds a {type(obj).__name__}, not a dictionary of tensors")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _needs_code(path: str, detail: str) -> str:
    what = ""
    for line in detail.splitlines():
        if "GLOBAL" in line or "global" in line:
            what = line.strip()
            break
    named = f" ({what[:160]})" if what else ""
    return (f"{os.path.basename(path)} is a pickle that needs code to load{named}. A pickle can run any program, "
            "so Easel loads .ckpt files only when they hold plain tensors (torch's weights_only=True). Convert it "
            "to .safetensors with a tool you trust, or download the .safetensors version of the model")
