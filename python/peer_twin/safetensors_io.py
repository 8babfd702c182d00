"""The safetensors format, read and written by its specification with the standard library, numpy and torch.

Layout: an unsigned 64-bit little-endian header length N, N bytes of UTF-8 JSON (padded with spaces to a multiple of
8), then the raw little-endian bytes of every tensor. The header maps each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets into the data section) and may hold "__metadata__", a map
of strings to strings. Reading checks the whole header before it reads any tensor, as the C# reader does
(src/Microsoft.ML.Peer/Interop/SafetensorsFile.cs): the byte ranges must tile the data section exactly and each must
hold exactly its shape's bytes. Every failure is a ValueError naming the tensor or field.
"""

import json
import os
import struct

import numpy as np
import torch

MAX_HEADER_BYTES = 100_000_000
MAX_RANK = 8

# dtype name -> (torch dtype, numpy dtype or None, bytes per element)
_DTYPES = {
    "F32": (torch.float32, np.float32, 4),
    "F64": (torch.float64, np.float64, 8),
    "F16": (torch.float16, np.float16, 2),
    "BF16": (torch.bfloat16, None, 2),
    "I64": (torch.int64, np.int64, 8),
    "I32": (torch.int32, np.int32, 4),
    "I16": (torch.int16, np.int16, 2),
    "I8": (torch.int8, np.int8, 1),
    "U8": (torch.uint8, np.uint8, 1),
    "BOOL": (torch.bool, np.bool_, 1),
}
_NAME_OF = {torch_type: name for name, (torch_type, _, _) in _DTYPES.items()}


def _unique_names(pairs):
    names = {}
    for name, value in pairs:
        if name in names:
            raise ValueError(f"its header names '{name}' twice")
        names[name] = value
    return names


def _read_header(handle, file_length):
    if file_length < 8:
        raise ValueError(f"it is {file_length} bytes long, shorter than the 8-byte header length")
    (header_length,) = struct.unpack("<Q", handle.read(8))
    if header_length > MAX_HEADER_BYTES:
        raise ValueError(f"its header length {header_length} exceeds the {MAX_HEADER_BYTES} bytes safetensors allows")
    if header_length > file_length - 8:
        raise ValueError(f"its header length {header_length} runs past the end of the file ({file_length} bytes)")
    raw = handle.read(header_length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_names)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"its header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    data_length = file_length - 8 - header_length
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("its '__metadata__' is not a JSON object of strings")
    entries = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor '{name}' is not described by exactly dtype, shape and data_offsets")
        dtype = entry["dtype"]
        if dtype not in _DTYPES:
            raise ValueError(f"tensor '{name}' has dtype {dtype!r}, which this reader does not know")
        shape = entry["shape"]
        if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"tensor '{name}' has an invalid shape {shape!r}")
        offsets = entry["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or offsets[0] < 0 or offsets[1] < offsets[0] or offsets[1] > data_length):
            raise ValueError(f"tensor '{name}' has data_offsets {offsets!r} outside the {data_length}-byte data section")
        size = _DTYPES[dtype][2] * int(np.prod(shape, dtype=object)) if shape else _DTYPES[dtype][2]
        if offsets[1] - offsets[0] != size:
            raise ValueError(f"tensor '{name}' ({dtype} {shape}) needs {size} bytes but its data_offsets span {offsets[1] - offsets[0]}")
        entries.append((offsets[0], offsets[1], name, dtype, shape))
    entries.sort()
    expected = 0
    for begin, end, name, _, _ in entries:
        if begin != expected:
            raise ValueError(f"tensor '{name}' overlaps the tensor before it" if begin < expected
                             else f"the data section has {begin - expected} bytes before tensor '{name}' that belong to no tensor")
        expected = end
    if expected != data_length:
        raise ValueError(f"its data section is {data_length} bytes but its tensors cover {expected}: the file is cut short or has bytes no tensor owns")
    return metadata, entries, 8 + header_length


def load(path):
    """Returns (tensors: dict name -> CPU tensor, metadata: dict of strings) of the safetensors file at path."""
    file_length = os.path.getsize(path)
    with open(path, "rb") as handle:
        try:
            metadata, entries, data_start = _read_header(handle, file_length)
        except ValueError as e:
            raise ValueError(f"The safetensors file '{path}' is not valid: {e}") from None
        tensors = {}
        for begin, end, name, dtype, shape in entries:
            handle.seek(data_start + begin)
            raw = handle.read(end - begin)
            if len(raw) != end - begin:
                raise ValueError(f"The safetensors file '{path}' ends inside tensor '{name}'")
            torch_type, numpy_type, _ = _DTYPES[dtype]
            if numpy_type is None:  # bfloat16: numpy has no such type; reinterpret 16-bit words
                array = np.frombuffer(raw, dtype="<i2").copy()
                tensors[name] = torch.from_numpy(array).view(torch.bfloat16).reshape(shape)
            else:
                array = np.frombuffer(raw, dtype=np.dtype(numpy_type).newbyteorder("<")).astype(numpy_type, copy=True)
                tensors[name] = torch.from_numpy(array).reshape(shape)
    return tensors, metadata


def save(path, tensors, metadata=None):
    """Writes tensors (an ordered mapping name -> tensor) and metadata (strings) to path, replacing it only when complete."""
    header = {"__metadata__": dict(metadata or {})}
    blobs = []
    offset = 0
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype not in _NAME_OF:
            raise ValueError(f"tensor '{name}' has element type {tensor.dtype}, which safetensors here does not write")
        if tensor.dtype == torch.bfloat16:
            data = tensor.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            data = tensor.numpy().astype(tensor.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _NAME_OF[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for data in blobs:
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
