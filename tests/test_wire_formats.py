"""Detector stream decoders: each against its encoder, against hand-assembled messages whose
bytes follow the published specs, and against hostile input (every failure a named
DecodeError, never another exception)."""

from __future__ import annotations

import json
import struct

import bitshuffle
import lz4.block
import numpy as np
import pytest

from cdistream.wire import DecodeError, Frame, SeriesEnd, SeriesStart, adzmq
from cdistream.wire.formats import FORMATS, make_decoder, make_encoder, sniff

IMAGE = np.array(
    [
        [0, 1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10, 11],
        [12, 13, 14, 300, 65535, 17],
        [18, 19, 20, 21, 22, 23],
    ],
    dtype=np.uint16,
)  # 4 rows x 6 columns; 65535 = the all-ones "invalid pixel" value


def bslz4_blob(array: np.ndarray) -> bytes:
    """Bitshuffle+LZ4 by the reference library, in the HDF5 filter framing: a big-endian u64
    with the uncompressed size in bytes, a big-endian u32 with the block size in bytes."""
    block = 4096  # elements: bitshuffle's 8 KiB target block for 2-byte elements
    header = struct.pack(">QI", array.nbytes, block * array.itemsize)
    return header + bitshuffle.compress_lz4(array.reshape(-1), block).tobytes()


def cbor_bytes(payload: bytes) -> bytes:
    """CBOR major type 2 (byte string) header for a payload of 24..255 / 256..65535 bytes."""
    n = len(payload)
    return (bytes([0x58, n]) if n < 256 else b"\x59" + struct.pack(">H", n)) + payload


def text(s: str) -> bytes:
    """CBOR major type 3 (text string), length < 24 in the initial byte: 0x60 | length."""
    assert len(s) < 24
    return bytes([0x60 | len(s)]) + s.encode()


# -- published byte layouts ---------------------------------------------------------------------


def test_stream_v2_image_message_assembled_from_the_spec():
    message = (
        bytes.fromhex("d9d9f7")  # tag 55799: self-described CBOR (stream V2 messages start so)
        + bytes.fromhex("a6")  # map of 6 pairs
        + text("type")
        + text("image")
        + text("series_id")
        + bytes.fromhex("07")  # unsigned 7
        + text("image_id")
        + bytes.fromhex("182a")  # unsigned 42 (one-byte argument follows 0x18)
        + text("series_date")
        + bytes.fromhex("c0")  # tag 0: standard date/time string
        + text("2026-11-25T08:00:00Z")
        + text("start_time")
        + bytes.fromhex("82")  # Rational: array of 2 unsigned
        + bytes.fromhex("1904d2")  # 1234 (two-byte argument)
        + bytes.fromhex("1a000f4240")  # 1,000,000 (four-byte argument): 1.234 ms
        + text("data")
        + bytes.fromhex("a1")  # map of 1: channel -> MultiDimArray
        + text("threshold_1")
        + bytes.fromhex("d828")  # tag 40: multi-dimensional array, row-major
        + bytes.fromhex("82")  # [dims, data]
        + bytes.fromhex("820406")  # dims [4, 6]: 4 rows of 6
        + bytes.fromhex("d845")  # tag 69: uint16 little-endian typed array
        + bytes.fromhex("d9dcb4")  # tag 56500: DECTRIS compressed byte string
        + bytes.fromhex("83")  # [algorithm, element size, data]
        + text("bslz4")
        + bytes.fromhex("02")  # element size 2
        + cbor_bytes(bslz4_blob(IMAGE))
    )
    assert sniff([message]) == "eiger-v2"
    (frame,) = make_decoder("eiger-v2").decode([message])
    assert isinstance(frame, Frame) and (frame.series, frame.frame) == (7, 42)
    np.testing.assert_array_equal(frame.image, IMAGE)
    assert frame.timestamp == pytest.approx(1795593600.0 + 1.234e-3)  # 2026-11-25T08:00:00Z


def test_stream_v2_start_message_assembled_from_the_spec():
    mask = np.zeros((4, 6), "<u4")
    mask[1, 2] = 1  # a dead pixel: any set bit masks
    message = (
        bytes.fromhex("d9d9f7")  # self-described CBOR
        + bytes.fromhex("ab")  # map of 11 pairs
        + text("type")
        + text("start")
        + text("series_id")
        + bytes.fromhex("07")
        + text("channels")
        + bytes.fromhex("82")  # array of 2 channel names
        + text("threshold_1")
        + text("threshold_2")
        + text("image_size_x")
        + bytes.fromhex("06")
        + text("image_size_y")
        + bytes.fromhex("04")
        + text("beam_center_x")
        + bytes.fromhex("fb4004000000000000")  # float64 2.5
        + text("beam_center_y")
        + bytes.fromhex("f94100")  # float16 2.5 (CBOR floats may be half precision)
        + text("incident_wavelength")
        + bytes.fromhex("fa3f800000")  # float32 1.0 angstrom
        + text("detector_translation")
        + bytes.fromhex("83f90000f90000f93800")  # [0.0, 0.0, 0.5] m: distance 0.5 m
        + text("count_time")
        + bytes.fromhex("fb3f50624dd2f1a9fc")  # float64 0.001 s
        + text("pixel_mask")
        + bytes.fromhex("a1")  # map of 1: channel -> 32-bit mask
        + text("threshold_2")
        + bytes.fromhex("d82882820406")  # tag 40, [dims [4, 6], ...
        + bytes.fromhex("d846")  # tag 70: uint32 little-endian typed array
        + cbor_bytes(mask.tobytes())  # 96 bytes, uncompressed
    )
    (start,) = make_decoder("eiger-v2", channel="threshold_2").decode([message])
    assert isinstance(start, SeriesStart) and start.series == 7 and start.shape == (4, 6)
    assert start.mask is not None and start.mask.sum() == 1 and start.mask[1, 2]
    meta = start.meta
    assert meta["channel"] == "threshold_2" and meta["beam_center_x"] == 2.5
    assert meta["beam_center_y"] == 2.5 and meta["wavelength"] == 1.0
    assert meta["detector_distance"] == 0.5 and meta["count_time"] == 0.001
    wrong = make_decoder("eiger-v2", channel="threshold_9")
    with pytest.raises(DecodeError, match="unknown_channel"):
        wrong.decode([message])


def v1_image_parts(encoding: str, blob: bytes, shape=(6, 4)) -> list[bytes]:
    return [
        b'{"htype":"dimage-1.0","series":3,"frame":5,"hash":""}',
        json.dumps(
            {"htype": "dimage_d-1.0", "shape": list(shape), "type": "uint16",
             "encoding": encoding, "size": len(blob)}
        ).encode(),
        blob,
        b'{"htype":"dconfig-1.0","start_time":2000000,"stop_time":3000000,"real_time":1000000}',
    ]  # fmt: skip


@pytest.mark.parametrize(
    "encoding, blob",
    [
        ("<", IMAGE.tobytes()),  # little-endian raw
        ("lz4<", lz4.block.compress(IMAGE.tobytes(), store_size=False)),  # a bare LZ4 block
        ("bs16-lz4<", bslz4_blob(IMAGE)),  # HDF5 bitshuffle framing, 16-bit elements
    ],
)
def test_stream_v1_messages_assembled_from_the_spec(encoding, blob):
    decoder = make_decoder("eiger-v1")
    header = [
        b'{"htype":"dheader-1.0","series":3,"header_detail":"basic"}',
        b'{"beam_center_x":2.5,"beam_center_y":1.5,"x_pixel_size":7.5e-05,"y_pixel_size":7.5e-05,'
        b'"wavelength":1.0,"detector_distance":0.5,"count_time":0.001,"nimages":6,"ntrigger":1,'
        b'"x_pixels_in_detector":6,"y_pixels_in_detector":4,"bit_depth_image":16,'
        b'"data_collection_date":"2026-11-25T08:00:00.000+00:00"}',
    ]
    assert sniff(header) == "eiger-v1"
    (start,) = decoder.decode(header)
    assert start.shape == (4, 6) and start.dtype == "uint16" and start.mask is None
    assert start.meta["pixel_size_x"] == 7.5e-05 and start.meta["detector_distance"] == 0.5
    (frame,) = decoder.decode(v1_image_parts(encoding, blob))  # shape [x, y] = [6, 4]
    assert (frame.series, frame.frame) == (3, 5)
    np.testing.assert_array_equal(frame.image, IMAGE)
    assert frame.timestamp == pytest.approx(1795593600.0 + 2e-3)  # date + start_time in ns
    (end,) = decoder.decode([b'{"htype":"dseries_end-1.0","series":3}'])
    assert end == SeriesEnd(3, 6)


@pytest.mark.parametrize(
    "header",
    [  # ADZMQ 1.4 and later: htype a string, shape [z,] y, x
        {"htype": "array-1.0", "type": "uint16", "shape": [4, 6], "encoding": ""},
        {"htype": "array-1.0", "type": "uint16", "shape": [1, 4, 6]},
        # before 1.4: htype a list, shape x, y
        {"htype": ["array-1.0"], "type": "uint16", "shape": [6, 4]},
    ],
)
def test_adzmq_messages_in_both_published_layouts(header):
    decoder = make_decoder("adzmq")
    parts = [json.dumps({**header, "frame": 9, "timeStamp": 1.0, "ndattr": {}}).encode()]
    parts.append(IMAGE.tobytes())
    assert sniff(parts) == "adzmq"
    start, frame = decoder.decode(parts)
    assert start.meta["series_inferred"] and frame.series == start.series == 1
    np.testing.assert_array_equal(frame.image, IMAGE)
    assert frame.timestamp == adzmq.EPICS_EPOCH + 1.0
    # the array counter going back means a new acquisition: a new series
    again = [json.dumps({**header, "frame": 1, "ndattr": {}}).encode(), IMAGE.tobytes()]
    end, start2, frame2 = decoder.decode(again)
    assert end.series == 1 and start2.series == frame2.series == 2


# -- every encoder against its decoder ----------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, compression",
    [
        ("native", None),
        ("eiger-v1", "none"),
        ("eiger-v1", "lz4"),
        ("eiger-v1", "bslz4"),
        ("eiger-v2", "none"),
        ("eiger-v2", "lz4"),
        ("eiger-v2", "bslz4"),
        ("adzmq", None),
    ],
)
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_round_trip_through_encoder_and_auto_decoder(fmt, compression, dtype):
    rng = np.random.default_rng(0)
    images = [rng.poisson(3, (64, 48)).astype(dtype) for _ in range(3)]
    mask = np.zeros((64, 48), bool)
    mask[20:22] = True
    meta = {"beam_center_x": 24.0, "count_time": 0.01, "number_of_images": 3}
    sent = [SeriesStart(4, (64, 48), dtype, mask, meta)]
    sent += [Frame(4, i, 1.8e9 + i, im) for i, im in enumerate(images)] + [SeriesEnd(4, 3)]
    encoder, decoder = make_encoder(fmt, compression), make_decoder("auto")
    got = [m for msg in sent for parts in encoder.encode(msg) for m in decoder.decode(parts)]
    assert decoder.name == fmt
    frames = [m for m in got if isinstance(m, Frame)]
    assert [(f.series, f.frame) for f in frames] == [(4, 0), (4, 1), (4, 2)]
    for f, im in zip(frames, images, strict=True):
        np.testing.assert_array_equal(f.image, im)
        assert f.image.dtype == np.dtype(dtype)
    assert [f.timestamp for f in frames] == pytest.approx([1.8e9, 1.8e9 + 1, 1.8e9 + 2])
    (start,) = [m for m in got if isinstance(m, SeriesStart)]
    assert start.series == 4
    if fmt != "adzmq":  # ADZMQ has no series header: no geometry, mask or metadata
        assert start.shape == (64, 48) and start.meta["beam_center_x"] == 24.0
        np.testing.assert_array_equal(start.mask, mask)
        assert [m for m in got if isinstance(m, SeriesEnd)] == [SeriesEnd(4, 3)]


# -- hostile input ------------------------------------------------------------------------------


def _v2(msg: dict) -> list[bytes]:
    import cbor2

    return [cbor2.dumps(msg)]


def _v2_image(content) -> list[bytes]:
    import cbor2

    array = cbor2.CBORTag(40, [[4, 6], cbor2.CBORTag(69, content)])
    return _v2({"type": "image", "series_id": 1, "image_id": 3, "data": {"t1": array}})


def _compressed(algorithm, elem, data):
    import cbor2

    return cbor2.CBORTag(56500, [algorithm, elem, data])


GOOD_BLOB = bslz4_blob(IMAGE)
CORRUPT_BLOB = GOOD_BLOB[:12] + bytes(b ^ 0x5A for b in GOOD_BLOB[12:])
LYING_BLOB = struct.pack(">QI", 1 << 40, 8192) + GOOD_BLOB[12:]  # claims a terabyte
V1_RAW = v1_image_parts("<", IMAGE.tobytes())
V1_HEADER_ALL = b'{"htype":"dheader-1.0","series":1,"header_detail":"all"}'


def _v2_no_frame(**fields) -> list[bytes]:
    return _v2({"type": "image", "series_id": 1, "data": {}, **fields})


def _ad(blob: bytes = b"", **fields) -> list[bytes]:
    header = {"htype": "array-1.0", "type": "uint16", "shape": [4, 6], "frame": 1, **fields}
    return [json.dumps({k: v for k, v in header.items() if v is not None}).encode(), blob]


HOSTILE = {
    "eiger-v1": [
        ("truncated image (3 of 4 parts)", V1_RAW[:3], "wrong_parts"),
        ("encoding part missing", V1_RAW[:1], "wrong_parts"),
        ("parts in the wrong order", [V1_RAW[i] for i in (0, 3, 2, 1)], "wrong_htype_order"),
        ("starts with the encoding part", V1_RAW[1:], "wrong_htype_order"),
        ("blob shorter than its size", [*V1_RAW[:2], V1_RAW[2][:-10], V1_RAW[3]], "wrong_size"),
        ("raw blob of the wrong size", v1_image_parts("<", IMAGE.tobytes()[:-2]), "wrong_size"),
        ("corrupt bslz4", v1_image_parts("bs16-lz4<", CORRUPT_BLOB), "corrupt_compressed"),
        ("corrupt lz4", v1_image_parts("lz4<", b"\xff" * 40), "corrupt_compressed"),
        ("bslz4 of a terabyte", v1_image_parts("bs16-lz4<", LYING_BLOB), "bad_compressed_size"),
        ("unknown encoding", v1_image_parts("zstd<", IMAGE.tobytes()), "unknown_encoding"),
        ("bitshuffle, wrong width", v1_image_parts("bs32-lz4<", GOOD_BLOB), "unknown_encoding"),
        ("shape not [x, y]", v1_image_parts("<", b"", shape=(6, 4, 1)), "bad_shape"),
        ("not JSON", [b"\x00\x01binary"], "malformed"),
        ("unknown htype", [b'{"htype":"dflatfield-2.0"}'], "unknown_type"),
        ("header_detail all, no mask", [V1_HEADER_ALL, b"{}"], "wrong_parts"),
        ("end without series", [b'{"htype":"dseries_end-1.0"}'], "missing_field"),
    ],
    "eiger-v2": [
        ("not CBOR", [b"\xff\xfe\xfd"], "malformed"),
        ("truncated CBOR", [_v2_image(IMAGE.tobytes())[0][:50]], "malformed"),
        ("two parts", _v2_image(IMAGE.tobytes()) * 2, "wrong_parts"),
        ("not a map", [b"\x83\x01\x02\x03"], "malformed"),
        ("unknown type", _v2({"type": "flatfield"}), "unknown_type"),
        ("image without image_id", _v2_no_frame(), "missing_field"),
        ("image_id a string", _v2_no_frame(image_id="3"), "wrong_type"),
        ("array of the wrong size", _v2_image(IMAGE.tobytes()[:-2]), "wrong_size"),
        ("corrupt bslz4", _v2_image(_compressed("bslz4", 2, CORRUPT_BLOB)), "corrupt_compressed"),
        (
            "bslz4 of a terabyte",
            _v2_image(_compressed("bslz4", 2, LYING_BLOB)),
            "bad_compressed_size",
        ),
        ("unknown compression", _v2_image(_compressed("zstd", 0, b"abc")), "unknown_encoding"),
        ("compression tag, wrong form", _v2_image(_compressed("bslz4", "2", b"")), "malformed"),
        ("no channel", _v2_no_frame(image_id=0), "unknown_channel"),
    ],
    "adzmq": [
        ("header only", _ad()[:1], "wrong_parts"),
        ("wrong size", _ad(b"\x00" * 10), "wrong_size"),
        ("unknown type", _ad(type="complex64"), "bad_dtype"),
        ("a stack of images", _ad(b"\x00" * 96, shape=[2, 4, 6]), "bad_shape"),
        ("compressed by NDPluginCodec", _ad(encoding="jpeg"), "unknown_encoding"),
        ("no frame counter", _ad(frame=None), "missing_field"),
        ("another htype", _ad(htype="chunk-1.0"), "unknown_type"),
        ("not JSON", [b"\x93binary", b""], "malformed"),
    ],
}


@pytest.mark.parametrize(
    "fmt, what, parts, reason",
    [(fmt, *case) for fmt, cases in HOSTILE.items() for case in cases],
    ids=[f"{fmt}: {case[0]}" for fmt, cases in HOSTILE.items() for case in cases],
)
def test_hostile_messages_are_named_decode_errors(fmt, what, parts, reason):
    with pytest.raises(DecodeError) as err:
        make_decoder(fmt).decode(parts)
    assert err.value.reason == reason, (what, str(err.value))


def test_rejected_frames_still_name_their_frame():
    with pytest.raises(DecodeError) as err:
        make_decoder("eiger-v1").decode(v1_image_parts("bs16-lz4<", CORRUPT_BLOB))
    assert (err.value.series, err.value.frame) == (3, 5)
    with pytest.raises(DecodeError) as err:
        make_decoder("eiger-v2").decode(_v2_image(_compressed("bslz4", 2, CORRUPT_BLOB)))
    assert (err.value.series, err.value.frame) == (1, 3)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "auto"])
def test_random_corruption_never_escapes_as_another_exception(fmt):
    """Flip, cut and splice bytes of valid messages: decoding either works or says why."""
    rng = np.random.default_rng(7)
    encoder = make_encoder(fmt, "bslz4")
    image = rng.poisson(5, (32, 32)).astype(np.uint16)
    valid = [
        parts
        for msg in (
            SeriesStart(1, (32, 32), "uint16", image > 8, {"beam_center_x": 1.0}),
            Frame(1, 0, 1.8e9, image),
            SeriesEnd(1, 1),
        )
        for parts in encoder.encode(msg)
    ]
    reasons = set()
    for _ in range(400):
        parts = [bytearray(memoryview(p)) for p in valid[rng.integers(len(valid))]]
        target = parts[rng.integers(len(parts))]
        action = rng.integers(3)
        if action == 0 and target:  # flip a few bytes
            for i in rng.integers(0, len(target), rng.integers(1, 4)):
                target[i] ^= int(rng.integers(1, 256))
        elif action == 1:  # cut
            del target[rng.integers(0, len(target) + 1) :]
        else:  # drop or duplicate a part
            parts = parts[1:] if rng.random() < 0.5 else parts + parts[-1:]
        try:
            make_decoder(fmt).decode([bytes(p) for p in parts])
        except DecodeError as exc:
            reasons.add(exc.reason)
    assert len(reasons) >= 3, reasons


def test_auto_says_what_it_saw_when_it_recognises_nothing():
    decoder = make_decoder("auto")
    with pytest.raises(DecodeError) as err:
        decoder.decode([b"GET / HTTP/1.1\r\n", b""])
    assert err.value.reason == "unrecognised_format"
    assert "2 part(s)" in str(err.value) and "GET / HTTP" in str(err.value)
    assert decoder.name == "auto"  # still listening for something it knows
