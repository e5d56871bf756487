"""The lab's tf.train.Example (key, indices, values) serialized without protobuf's objects, byte for byte as
``tf.train.Example.SerializeToString(deterministic=True)`` gives it: protobuf's objects cost 40–60 µs a record."""
import numpy as np

KEY, INDICES, VALUES = "key", "indices", "values"


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]  # the varints of 0..127, most lengths in an Example


def _varint(n):
    """Protobuf's varint of an int64 (a negative one as its 64-bit two's complement: ten bytes)."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _varints(values):
    """Protobuf's varints of int64s, concatenated, and where each one ends (numpy, no loop per value)."""
    values = np.asarray(values, np.int64).view(np.uint64)
    sizes = np.ones(len(values), np.int64)
    for shift in range(7, 64, 7):
        sizes += values >= np.uint64(1 << shift)
    ends = np.cumsum(sizes)
    out = np.empty(int(ends[-1]) if len(ends) else 0, np.uint8)
    starts = ends - sizes
    for byte in range(int(sizes.max()) if len(sizes) else 0):
        has = sizes > byte
        part = (values[has] >> np.uint64(7 * byte)) & np.uint64(0x7F)
        more = (sizes[has] > byte + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + byte] = (part | more).astype(np.uint8)
    return out.tobytes(), ends


def _field(number, payload):
    """A length-delimited protobuf field: its tag, the payload's length, the payload."""
    return _ONE_BYTE[number << 3 | 2] + _varint(len(payload)) + payload


_NAME_FIELDS = {name: _field(1, name.encode()) for name in (KEY, INDICES, VALUES)}


def _feature_entry(name, list_field, packed):
    """One entry of Features' map: the name, and a Feature holding one packed list (field ``list_field``)."""
    values = _field(1, packed) if packed else b""
    return _field(1, _NAME_FIELDS[name] + _field(2, _field(list_field, values)))


def _example(key, index_varints, value_floats):
    """The serialized Example of a key, its indices' varints and its values' little-endian float32s: the
    bytes ``tf.train.Example.SerializeToString(deterministic=True)`` gives (map entries by name)."""
    return _field(1, _feature_entry(INDICES, 3, index_varints) + _feature_entry(KEY, 3, _varint(key)) +
                  _feature_entry(VALUES, 2, value_floats))


def encode_example(key, indices, values):
    """One serialized Example (key, indices, values), byte-for-byte the same for the same input."""
    return _example(int(key), _varints(indices)[0], np.asarray(values, "<f4").tobytes())


def encoded_examples(csr, keys):
    """Yield encode_example of each row ``keys`` of ``csr``, the varints and floats of those rows made at
    once: protobuf's objects cost 40–60 µs a record, these a few."""
    keys = np.asarray(keys, np.int64)
    lengths = csr.offsets[keys + 1] - csr.offsets[keys]
    ends = np.cumsum(lengths)
    at = np.repeat(csr.offsets[keys] - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
    index_bytes, index_ends = _varints(csr.indices[at])
    index_ends = np.concatenate([[0], index_ends])
    value_bytes = np.asarray(csr.values[at], "<f4").tobytes()
    for key, begin, end in zip(keys.tolist(), (ends - lengths).tolist(), ends.tolist()):
        yield _example(key, index_bytes[index_ends[begin]:index_ends[end]], value_bytes[4 * begin:4 * end])
