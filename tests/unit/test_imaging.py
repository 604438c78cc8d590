"""tasks.compute.imaging: black-and-white conversion of what people really upload.

Every input is built here with Pillow (or, where Pillow cannot write it, as raw
PNG chunks), and every test asserts on decoded values: output format, mode,
size and pixel values at known points.
"""

from __future__ import annotations

import random
import resource
import struct
import time
import warnings
import zlib
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile

from cloudworker.errors import InvalidImage, LimitExceeded
from tasks.compute.imaging import (
    SUPPORTED_INPUT_FORMATS,
    SUPPORTED_OUTPUT_FORMATS,
    image_format_for_extension,
    to_grayscale,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
# ITU-R 601 luma as Pillow computes it: L = R*299/1000 + G*587/1000 + B*114/1000.
RED_L, GREEN_L, BLUE_L = 76, 150, 29
ORIENTATION = 0x0112


# --------------------------------------------------------------------------- helpers


def encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(BytesIO(data))
    im.load()
    return im


def patches(colours: Sequence[tuple[int, ...]], mode: str = "RGB", size: int = 16) -> Image.Image:
    """A row of solid ``size`` x ``size`` squares, one per colour (JPEG-block aligned)."""
    im = Image.new(mode, (size * len(colours), size))
    for i, colour in enumerate(colours):
        im.paste(colour, (i * size, 0, (i + 1) * size, size))
    return im


def centre(i: int, size: int = 16) -> tuple[int, int]:
    """The centre of patch ``i`` made by :func:`patches`."""
    return i * size + size // 2, size // 2


def level(im: Image.Image, xy: tuple[int, int]) -> int:
    """The value of a single-band pixel."""
    value = im.getpixel(xy)
    assert isinstance(value, int)
    return value


def bands(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The values of a multi-band pixel."""
    value = im.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def alpha(im: Image.Image, xy: tuple[int, int]) -> int:
    """The alpha (last band) of an ``LA`` or ``RGBA`` pixel."""
    return bands(im, xy)[-1]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG from raw parts, for what Pillow will not write (16-bit RGB, bombs, 0x0)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


def frames_of(data: bytes, mode: str = "L") -> list[Image.Image]:
    im = Image.open(BytesIO(data))
    frames = []
    for index in range(getattr(im, "n_frames", 1)):
        im.seek(index)
        frames.append(im.convert(mode))
    return frames


def durations_of(data: bytes) -> list[int]:
    im = Image.open(BytesIO(data))
    result = []
    for index in range(getattr(im, "n_frames", 1)):
        im.seek(index)
        im.load()  # WebP sets a frame's duration when it is decoded
        result.append(int(im.info.get("duration", 0)))
    return result


# --------------------------------------------------------------------------- luma


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
@pytest.mark.parametrize(("colour", "expected"), [(RED, RED_L), (GREEN, GREEN_L), (BLUE, BLUE_L)])
def test_pure_primaries_give_exact_601_luma(
    fmt: str, colour: tuple[int, int, int], expected: int
) -> None:
    out = decode(to_grayscale(encode(Image.new("RGB", (8, 8), colour), fmt)))
    assert out.format == fmt
    assert out.mode == "L"
    assert out.size == (8, 8)
    assert out.getpixel((3, 3)) == expected


def test_mixed_colour_matches_pillow_rgb_to_l() -> None:
    source = Image.new("RGB", (4, 1))
    for x, colour in enumerate([(10, 200, 30), (255, 255, 255), (0, 0, 0), (123, 45, 67)]):
        source.putpixel((x, 0), colour)
    out = decode(to_grayscale(encode(source, "PNG")))
    assert list(out.tobytes()) == list(source.convert("L").tobytes())
    assert list(out.tobytes())[1:3] == [255, 0]


def test_grey_input_stays_grey_and_unchanged() -> None:
    source = Image.linear_gradient("L").resize((64, 32))
    out = decode(to_grayscale(encode(source, "PNG")))
    assert (out.format, out.mode, out.size) == ("PNG", "L", (64, 32))
    assert out.tobytes() == source.tobytes()


def test_one_bit_input_becomes_black_and_white_l() -> None:
    source = Image.new("1", (8, 4), 0)
    source.paste(1, (4, 0, 8, 4))
    out = decode(to_grayscale(encode(source, "PNG")))
    assert out.mode == "L"
    assert (out.getpixel((1, 1)), out.getpixel((6, 1))) == (0, 255)


# --------------------------------------------------------------------------- JPEG


def test_jpeg_photo_turns_grey_jpeg() -> None:
    source = patches([RED, GREEN, BLUE, (255, 255, 255)])
    out = decode(to_grayscale(encode(source, "JPEG", quality=95)))
    assert (out.format, out.mode, out.size) == ("JPEG", "L", source.size)
    for i, expected in enumerate([RED_L, GREEN_L, BLUE_L, 255]):
        assert abs(level(out, centre(i)) - expected) <= 4


def test_output_jpeg_carries_no_icc_profile_or_exif() -> None:
    icc = b"\0" * 128  # content is irrelevant: it must not be copied
    data = encode(
        Image.new("RGB", (16, 16), RED), "JPEG", icc_profile=icc, exif=exif_with_orientation(1)
    )
    assert "icc_profile" in decode(data).info
    out = decode(to_grayscale(data))
    assert "icc_profile" not in out.info
    assert ORIENTATION not in out.getexif()


def test_progressive_jpeg() -> None:
    source = patches([RED, GREEN, BLUE])
    data = encode(source, "JPEG", quality=95, progressive=True)
    assert decode(data).info.get("progressive")
    out = decode(to_grayscale(data))
    assert (out.format, out.mode, out.size) == ("JPEG", "L", source.size)
    for i, expected in enumerate([RED_L, GREEN_L, BLUE_L]):
        assert abs(level(out, centre(i)) - expected) <= 4


def test_cmyk_jpeg_including_adobe_inversion() -> None:
    colours = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)]
    data = encode(patches(colours, mode="CMYK"), "JPEG", quality=95)
    source = decode(data)
    assert source.mode == "CMYK"
    assert "adobe" in source.info  # Pillow writes Adobe (inverted) CMYK
    out = decode(to_grayscale(data))
    assert (out.format, out.mode) == ("JPEG", "L")
    # cyan = (0,255,255), magenta = (255,0,255), yellow = (255,255,0), black, white
    for i, expected in enumerate([179, 105, 226, 0, 255]):
        assert abs(level(out, centre(i)) - expected) <= 5, i


def _marked_landscape() -> Image.Image:
    """64x32 white image stored landscape, with a black 16x16 marker at its top-left."""
    im = Image.new("RGB", (64, 32), (255, 255, 255))
    im.paste((0, 0, 0), (0, 0, 16, 16))
    return im


CORNERS = {
    "top-left": (4, 4),
    "top-right": (27, 4),
    "bottom-left": (4, 59),
    "bottom-right": (27, 59),
}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize(
    ("orientation", "marker_corner"),
    # 6: the camera was turned clockwise; shown rotated 90 degrees clockwise, the
    # stored top-left lands top-right.  8: counter-clockwise, it lands bottom-left.
    [(6, "top-right"), (8, "bottom-left")],
)
def test_exif_rotated_photo_is_output_upright(
    fmt: str, orientation: int, marker_corner: str
) -> None:
    data = encode(_marked_landscape(), fmt, exif=exif_with_orientation(orientation))
    out = decode(to_grayscale(data))
    assert out.format == fmt
    assert out.size == (32, 64)  # width and height swapped
    grey = out.convert("L")
    for corner, point in CORNERS.items():
        value = level(grey, point)
        if corner == marker_corner:
            assert value < 40, corner
        else:
            assert value > 215, corner
    # Nothing left in the file would rotate it again.
    assert out.getexif().get(ORIENTATION) in (None, 1)


def test_mpo_is_written_as_a_plain_jpeg_of_its_first_picture() -> None:
    first, second = Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=95)
    assert decode(data).format == "MPO"
    out = decode(to_grayscale(data))
    assert (out.format, out.mode) == ("JPEG", "L")
    assert getattr(out, "n_frames", 1) == 1
    assert abs(level(out, (8, 8)) - RED_L) <= 4


# --------------------------------------------------------------------------- palettes, alpha


def _palette_image(transparency: int | bytes | None) -> Image.Image:
    im = Image.new("P", (3, 1))
    im.putpalette([*RED, *BLUE, *GREEN] + [0] * (256 - 3) * 3)
    im.putdata([0, 1, 2])
    if transparency is not None:
        im.info["transparency"] = transparency
    return im


def test_palette_png_without_transparency() -> None:
    out = decode(to_grayscale(encode(_palette_image(None), "PNG")))
    assert (out.format, out.mode) == ("PNG", "L")
    assert list(out.tobytes()) == [RED_L, BLUE_L, GREEN_L]


def test_palette_png_with_transparent_index_keeps_alpha() -> None:
    out = decode(to_grayscale(encode(_palette_image(None), "PNG", transparency=2)))
    assert (out.format, out.mode) == ("PNG", "LA")
    assert out.getpixel((0, 0)) == (RED_L, 255)
    assert out.getpixel((1, 0)) == (BLUE_L, 255)
    assert alpha(out, (2, 0)) == 0


def test_palette_png_with_per_entry_alpha() -> None:
    data = encode(_palette_image(None), "PNG", transparency=bytes([255, 128, 0]))
    out = decode(to_grayscale(data))
    assert out.mode == "LA"
    assert [alpha(out, (x, 0)) for x in range(3)] == [255, 128, 0]


def test_palette_png_with_transparency_to_jpeg_is_flattened_on_white() -> None:
    im = Image.new("P", (32, 16))
    im.putpalette([*RED, 0, 0, 0] + [0] * 254 * 3)
    im.paste(1, (16, 0, 32, 16))
    out = decode(to_grayscale(encode(im, "PNG", transparency=1), output_format="JPEG"))
    assert (out.format, out.mode) == ("JPEG", "L")
    assert abs(level(out, (8, 8)) - RED_L) <= 3
    assert level(out, (24, 8)) >= 252  # transparent black shows as white


def _rgba_source() -> Image.Image:
    """Opaque red, half-transparent green, fully transparent blue, half-transparent black."""
    return patches([(*RED, 255), (*GREEN, 128), (*BLUE, 0), (0, 0, 0, 128)], mode="RGBA")


def test_rgba_png_keeps_alpha_as_la() -> None:
    out = decode(to_grayscale(encode(_rgba_source(), "PNG")))
    assert (out.format, out.mode, out.size) == ("PNG", "LA", (64, 16))
    assert out.getpixel(centre(0)) == (RED_L, 255)
    assert out.getpixel(centre(1)) == (GREEN_L, 128)
    assert alpha(out, centre(2)) == 0
    assert out.getpixel(centre(3)) == (0, 128)


def test_la_png_is_kept_as_is() -> None:
    source = Image.new("LA", (4, 4), (90, 60))
    out = decode(to_grayscale(encode(source, "PNG")))
    assert out.mode == "LA"
    assert out.getpixel((1, 1)) == (90, 60)


def test_rgba_to_bmp_is_flattened_on_white_exactly() -> None:
    out = decode(to_grayscale(encode(_rgba_source(), "PNG"), output_format="BMP"))
    assert (out.format, out.mode) == ("BMP", "L")
    assert out.getpixel(centre(0)) == RED_L
    assert out.getpixel(centre(1)) == 202  # (150*128 + 255*127) / 255
    assert out.getpixel(centre(2)) == 255  # fully transparent -> white
    assert out.getpixel(centre(3)) == 127  # half-transparent black -> mid grey


def test_rgba_to_jpeg_is_flattened_on_white() -> None:
    out = decode(to_grayscale(encode(_rgba_source(), "PNG"), output_format="JPEG"))
    assert (out.format, out.mode) == ("JPEG", "L")
    for i, expected in enumerate([RED_L, 202, 255, 127]):
        assert abs(level(out, centre(i)) - expected) <= 4, i


def test_rgb_png_with_trns_colour_gets_alpha() -> None:
    data = encode(patches([RED, BLUE]), "PNG", transparency=BLUE)
    out = decode(to_grayscale(data))
    assert out.mode == "LA"
    assert out.getpixel(centre(0)) == (RED_L, 255)
    assert alpha(out, centre(1)) == 0


# --------------------------------------------------------------------------- 16-bit


def _sixteen_bit_ramp(mode: str = "I;16") -> Image.Image:
    """256 x 2: sample x is ``x * 257``, so 0..65535, the full 16-bit range."""
    values = [x * 257 for x in range(256)] * 2
    order = ">" if mode == "I;16B" else "<"
    return Image.frombytes(mode, (256, 2), struct.pack(f"{order}{len(values)}H", *values))


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    data = encode(_sixteen_bit_ramp(), "PNG")
    source = decode(data)
    assert source.mode == "I;16"
    # What plain Pillow does: everything above 255 is clipped to white.
    assert source.convert("L").getpixel((2, 0)) == 255
    out = decode(to_grayscale(data))
    assert (out.format, out.mode, out.size) == ("PNG", "L", (256, 2))
    row = list(out.tobytes())[:256]
    assert row == list(range(256))  # v >> 8: spans 0..255, strictly monotonic


def test_sixteen_bit_scaling_is_high_byte() -> None:
    values = [0, 255, 256, 0x7FFF, 0x8000, 0xFF00, 0xFFFF]
    source = Image.frombytes("I;16", (len(values), 1), struct.pack(f"<{len(values)}H", *values))
    out = decode(to_grayscale(encode(source, "PNG")))
    assert list(out.tobytes()) == [v >> 8 for v in values]


def test_sixteen_bit_big_endian_tiff() -> None:
    data = encode(_sixteen_bit_ramp("I;16B"), "TIFF")
    assert decode(data).mode == "I;16B"
    out = decode(to_grayscale(data))
    assert (out.format, out.mode) == ("TIFF", "L")
    assert list(out.tobytes())[:256] == list(range(256))


def test_thirty_two_bit_int_tiff_is_clipped_to_16_bits_then_scaled() -> None:
    values = [-5, 0, 256, 65535, 70000]
    source = Image.new("I", (len(values), 1))
    for x, value in enumerate(values):
        source.putpixel((x, 0), value)
    data = encode(source, "TIFF")
    assert decode(data).mode == "I"
    out = decode(to_grayscale(data))
    assert list(out.tobytes()) == [0, 0, 1, 255, 255]


def test_sixteen_bit_grey_png_with_trns_value_gets_alpha() -> None:
    values = [300, 5000, 300 + 256, 300 + 1]  # only an exact 16-bit match is transparent
    source = Image.frombytes("I;16", (4, 1), struct.pack("<4H", *values))
    data = encode(source, "PNG", transparency=300)
    out = decode(to_grayscale(data))
    assert out.mode == "LA"
    assert [out.getpixel((x, 0)) for x in range(4)] == [(1, 0), (19, 255), (2, 255), (1, 255)]


def test_sixteen_bit_rgb_png() -> None:
    # Pillow cannot write 16-bit RGB; build it.  Pillow opens it as 8-bit RGB by
    # keeping the high byte, which is the same >> 8 the grey path uses.
    pixels = [(65535, 0, 0), (0, 65535, 0), (0, 0, 65535), (32896, 32896, 32896)]
    row = b"\x00" + b"".join(struct.pack(">3H", *p) for p in pixels)
    data = raw_png(len(pixels), 1, 16, 2, zlib.compress(row))
    assert decode(data).mode == "RGB"
    out = decode(to_grayscale(data))
    assert (out.format, out.mode) == ("PNG", "L")
    assert list(out.tobytes()) == [RED_L, GREEN_L, BLUE_L, 128]


def test_sixteen_bit_rgba_png_keeps_alpha() -> None:
    row = b"\x00" + struct.pack(">8H", 65535, 0, 0, 65535, 0, 0, 65535, 0)
    out = decode(to_grayscale(raw_png(2, 1, 16, 6, zlib.compress(row))))
    assert out.mode == "LA"
    assert out.getpixel((0, 0)) == (RED_L, 255)
    assert alpha(out, (1, 0)) == 0


# --------------------------------------------------------------------------- other formats


def test_webp_lossless_stays_lossless_and_exact() -> None:
    data = encode(patches([RED, GREEN, BLUE]), "WEBP", lossless=True)
    out = decode(to_grayscale(data))
    assert out.format == "WEBP"
    assert out.size == (48, 16)
    for i, expected in enumerate([RED_L, GREEN_L, BLUE_L]):
        assert out.getpixel(centre(i)) == (expected, expected, expected)  # WebP has no grey mode


def test_webp_with_alpha_keeps_alpha() -> None:
    data = encode(_rgba_source(), "WEBP", lossless=True, exact=True)
    out = decode(to_grayscale(data))
    assert (out.format, out.mode) == ("WEBP", "RGBA")
    assert out.getpixel(centre(0)) == (RED_L, RED_L, RED_L, 255)
    assert out.getpixel(centre(1)) == (GREEN_L, GREEN_L, GREEN_L, 128)
    assert alpha(out, centre(2)) == 0


def test_lossy_webp() -> None:
    data = encode(patches([RED, GREEN, BLUE]), "WEBP", quality=95)
    out = decode(to_grayscale(data))
    assert out.format == "WEBP"
    grey = out.convert("L")
    for i, expected in enumerate([RED_L, GREEN_L, BLUE_L]):
        assert abs(level(grey, centre(i)) - expected) <= 6, i


def test_gif() -> None:
    data = encode(patches([RED, GREEN, BLUE]).convert("P"), "GIF")
    out = decode(to_grayscale(data))
    assert out.format == "GIF"
    grey = out.convert("L")
    assert [grey.getpixel(centre(i)) for i in range(3)] == [RED_L, GREEN_L, BLUE_L]


def test_gif_transparency_is_kept_with_a_transparency_index() -> None:
    source = _palette_image(None)
    out = decode(to_grayscale(encode(source, "GIF", transparency=2)))
    assert out.format == "GIF"
    assert "transparency" in out.info
    la = out.convert("LA")
    assert la.getpixel((0, 0)) == (RED_L, 255)
    assert la.getpixel((1, 0)) == (BLUE_L, 255)
    assert alpha(la, (2, 0)) == 0


def test_gif_alpha_when_every_grey_level_is_used() -> None:
    # All 256 levels are opaque somewhere, so one (the rarest) must give way to
    # the transparent index: opaque pixels move by at most one level.
    source = Image.new("LA", (257, 2), (0, 0))
    for x in range(256):
        source.putpixel((x, 0), (x, 255))
    source.putpixel((256, 0), (200, 255))
    out = decode(to_grayscale(encode(source, "PNG"), output_format="GIF"))
    la = out.convert("LA")
    for x in range(256):
        value, opacity = bands(la, (x, 0))
        assert opacity == 255
        assert abs(value - x) <= 1
    assert all(alpha(la, (x, 1)) == 0 for x in range(257))


def _animation(colours: Sequence[tuple[int, int, int]]) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), colour) for colour in colours]


def test_animated_gif_keeps_every_frame_and_its_timing() -> None:
    frames = _animation([RED, GREEN, BLUE])
    data = encode(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0
    )
    out = to_grayscale(data)
    assert decode(out).format == "GIF"
    assert [f.getpixel((4, 4)) for f in frames_of(out)] == [RED_L, GREEN_L, BLUE_L]
    assert durations_of(out) == [100, 200, 300]
    assert Image.open(BytesIO(out)).info.get("loop") == 0


def test_animated_gif_with_transparency_keeps_alpha_per_frame() -> None:
    first = Image.new("RGBA", (8, 4), (0, 0, 0, 0))
    first.paste((*RED, 255), (0, 0, 4, 4))
    second = Image.new("RGBA", (8, 4), (0, 0, 0, 0))
    second.paste((*BLUE, 255), (4, 0, 8, 4))
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=50, disposal=2)
    out = to_grayscale(data)
    one, two = frames_of(out, "LA")
    assert one.getpixel((1, 1)) == (RED_L, 255)
    assert alpha(one, (6, 1)) == 0
    assert two.getpixel((6, 1)) == (BLUE_L, 255)
    assert alpha(two, (1, 1)) == 0


def test_animated_gif_to_another_format_keeps_the_first_frame_only() -> None:
    frames = _animation([RED, GREEN])
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = decode(to_grayscale(data, output_format="PNG"))
    assert (out.format, out.mode) == ("PNG", "L")
    assert getattr(out, "n_frames", 1) == 1
    assert out.getpixel((4, 4)) == RED_L


def test_animated_webp_keeps_every_frame() -> None:
    frames = _animation([RED, GREEN, BLUE])
    data = encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=70, lossless=True
    )
    out = to_grayscale(data)
    assert decode(out).format == "WEBP"
    assert [f.getpixel((4, 4)) for f in frames_of(out)] == [RED_L, GREEN_L, BLUE_L]
    assert durations_of(out) == [70, 70, 70]


def test_animated_png_keeps_every_frame() -> None:
    frames = _animation([RED, GREEN])
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=40)
    out = to_grayscale(data)
    assert [f.getpixel((4, 4)) for f in frames_of(out)] == [RED_L, GREEN_L]


def test_multi_page_tiff_keeps_every_page() -> None:
    frames = _animation([RED, BLUE])
    out = to_grayscale(encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    assert decode(out).format == "TIFF"
    assert [f.getpixel((4, 4)) for f in frames_of(out)] == [RED_L, BLUE_L]


def test_tiff_with_alpha() -> None:
    out = decode(to_grayscale(encode(_rgba_source(), "TIFF")))
    assert (out.format, out.mode) == ("TIFF", "LA")
    assert out.getpixel(centre(0)) == (RED_L, 255)
    assert out.getpixel(centre(3)) == (0, 128)


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr"])
def test_other_colour_modes_in_tiff(mode: str) -> None:
    data = encode(Image.new("RGB", (8, 8), RED).convert(mode), "TIFF")
    assert decode(data).mode == mode
    out = decode(to_grayscale(data))
    assert (out.format, out.mode) == ("TIFF", "L")
    assert abs(level(out, (4, 4)) - RED_L) <= 1


def test_float_tiff_is_clipped_to_8_bits() -> None:
    source = Image.new("F", (3, 1))
    for x, value in enumerate([-3.0, 76.4, 300.0]):
        source.putpixel((x, 0), value)
    out = decode(to_grayscale(encode(source, "TIFF")))
    assert list(out.tobytes()) == [0, 76, 255]


def test_lab_tiff_uses_its_lightness_band() -> None:
    lab = Image.new("RGB", (8, 8), RED).convert("LAB")
    out = decode(to_grayscale(encode(lab, "TIFF")))
    assert out.mode == "L"
    assert level(out, (4, 4)) == level(lab.getchannel("L"), (4, 4))


def test_bmp_palette_input() -> None:
    out = decode(to_grayscale(encode(_palette_image(None), "BMP")))
    assert (out.format, out.mode) == ("BMP", "L")
    assert list(out.tobytes()) == [RED_L, BLUE_L, GREEN_L]


# --------------------------------------------------------------------------- output formats


def test_output_format_override_png_to_jpeg() -> None:
    out = decode(to_grayscale(encode(patches([RED, GREEN]), "PNG"), output_format="JPEG"))
    assert (out.format, out.mode, out.size) == ("JPEG", "L", (32, 16))
    assert abs(level(out, centre(1)) - GREEN_L) <= 3


@pytest.mark.parametrize(
    ("name", "expected"), [("png", "PNG"), ("Jpeg", "JPEG"), ("jpg", "JPEG"), (" tif ", "TIFF")]
)
def test_output_format_is_case_insensitive_and_accepts_extensions(name: str, expected: str) -> None:
    out = decode(to_grayscale(encode(Image.new("RGB", (8, 8), RED), "BMP"), output_format=name))
    assert out.format == expected


@pytest.mark.parametrize("name", ["XBM", "NOPE", "", "BUFR"])
def test_output_format_pillow_cannot_write_grey_in(name: str) -> None:
    with pytest.raises(InvalidImage, match="unsupported output format"):
        to_grayscale(encode(Image.new("RGB", (8, 8), RED), "PNG"), output_format=name)


def test_output_format_is_validated_before_decoding() -> None:
    with pytest.raises(InvalidImage, match="unsupported output format"):
        to_grayscale(b"not an image", output_format="NOPE")


@pytest.mark.parametrize("fmt", sorted(SUPPORTED_OUTPUT_FORMATS))
def test_every_supported_output_format_can_be_written(fmt: str) -> None:
    out = to_grayscale(encode(_rgba_source(), "PNG"), output_format=fmt)
    assert out
    if fmt in ("EPS", "PDF"):  # Pillow writes these but cannot read them back
        return
    im = decode(out)
    assert im.mode in ("L", "LA", "P", "RGB", "RGBA")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".jpg", "JPEG"),
        (".jpeg", "JPEG"),
        ("photo.JPEG", "JPEG"),
        ("dir.v2/photo.Jpg", "JPEG"),
        ("jpg", "JPEG"),
        (".png", "PNG"),
        (".tif", "TIFF"),
        (".tiff", "TIFF"),
        (".webp", "WEBP"),
        (".gif", "GIF"),
        (".bmp", "BMP"),
    ],
)
def test_image_format_for_extension(name: str, expected: str) -> None:
    assert image_format_for_extension(name) == expected


@pytest.mark.parametrize("name", [".xyz", "", ".", "photo", "archive.tar", ".xbm", ".txt"])
def test_image_format_for_unknown_extension(name: str) -> None:
    with pytest.raises(InvalidImage, match="unsupported output format"):
        image_format_for_extension(name)


def test_supported_formats() -> None:
    assert {"JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP"} <= SUPPORTED_OUTPUT_FORMATS
    # Stub handlers and formats without 8-bit grey are not offered.
    assert not {"XBM", "BUFR", "GRIB", "HDF5", "WMF"} & SUPPORTED_OUTPUT_FORMATS
    assert SUPPORTED_INPUT_FORMATS <= SUPPORTED_OUTPUT_FORMATS


# --------------------------------------------------------------------------- bad input


def _assert_one_line(exc: pytest.ExceptionInfo[Exception]) -> None:
    assert "\n" not in str(exc.value)
    assert str(exc.value)


def test_empty_input() -> None:
    with pytest.raises(InvalidImage, match=r"^image is empty$"):
        to_grayscale(b"")


def test_random_bytes() -> None:
    data = random.Random(7).randbytes(4096)
    with pytest.raises(InvalidImage, match="not an image Pillow can read: unknown format") as exc:
        to_grayscale(data)
    _assert_one_line(exc)


def test_text() -> None:
    with pytest.raises(InvalidImage, match="not an image Pillow can read: the data is text"):
        to_grayscale(b"hello, this is a letter and not a photo\n" * 10)


def test_unsupported_input_format_is_refused() -> None:
    # PPM is a format Pillow reads, but not one accepted as input.
    with pytest.raises(InvalidImage, match="not an image Pillow can read"):
        to_grayscale(encode(Image.new("RGB", (4, 4)), "PPM"))


def test_truncated_jpeg() -> None:
    data = encode(_marked_landscape().resize((256, 256)), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="JPEG image is truncated or corrupt") as exc:
        to_grayscale(data[: len(data) // 2])
    _assert_one_line(exc)
    assert isinstance(exc.value.__cause__, OSError)


def test_truncated_png() -> None:
    noise = Image.frombytes("L", (128, 128), random.Random(3).randbytes(128 * 128))
    data = encode(noise, "PNG")
    with pytest.raises(InvalidImage, match="PNG image is truncated or corrupt") as exc:
        to_grayscale(data[: len(data) // 2])
    _assert_one_line(exc)


@pytest.mark.parametrize("length", [8, 20, 33])
def test_png_cut_inside_its_header(length: int) -> None:
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(InvalidImage, match="looks like PNG but its header is damaged") as exc:
        to_grayscale(data[:length])
    _assert_one_line(exc)


def test_zero_size_image() -> None:
    data = raw_png(0, 5, 8, 0, zlib.compress(b""))
    with pytest.raises(InvalidImage, match=r"image has zero size \(0x5\)"):
        to_grayscale(data)


def test_over_max_pixels() -> None:
    data = encode(Image.new("RGB", (40, 30)), "PNG")
    with pytest.raises(LimitExceeded, match=r"40x30 = 1200 pixels, over the limit of 1000 pixels"):
        to_grayscale(data, max_pixels=1000)
    assert decode(to_grayscale(data, max_pixels=1200)).size == (40, 30)


def test_max_pixels_counts_every_frame_of_an_animation() -> None:
    frames = _animation([RED, GREEN, BLUE])  # 3 x 8 x 8 = 192 pixels
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(LimitExceeded, match=r"8x8 pixels x 3 frames = 192 pixels"):
        to_grayscale(data, max_pixels=191)
    assert len(frames_of(to_grayscale(data, max_pixels=192))) == 3
    # Only the first frame is decoded for a single-frame output format.
    assert decode(to_grayscale(data, output_format="PNG", max_pixels=64)).size == (8, 8)


def test_gif_frame_that_grows_the_canvas_is_checked_before_it_is_decoded() -> None:
    # A 4x4 GIF whose second frame declares 100x100 (Pillow grows the canvas to
    # fit) and whose pixel data is garbage: the size check must come first.
    data = encode(Image.new("P", (4, 4), 1), "GIF")
    assert data.endswith(b";")
    big_frame = b"," + struct.pack("<4H", 0, 0, 100, 100) + b"\x00" + b"\x02\x02\x4c\x01\x00"
    data = data[:-1] + big_frame + b";"
    with pytest.raises(LimitExceeded, match=r"100x100 pixels x 2 frames = 20000 pixels"):
        to_grayscale(data, max_pixels=1000)
    with pytest.raises(InvalidImage, match="GIF image is truncated or corrupt"):
        to_grayscale(data)


def _bomb(width: int, height: int) -> bytes:
    """A tiny 1-bit PNG whose header declares ``width`` x ``height`` pixels."""
    rows = zlib.compressobj(9)
    idat = rows.compress(b"\0" * (1 + width // 8) * 64) + rows.flush()
    return raw_png(width, height, 1, 0, idat)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    data = _bomb(100_000, 100_000)  # 10 gigapixels in about a kilobyte
    assert len(data) < 10_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(LimitExceeded, match=r"100000x100000 = 10000000000 pixels") as exc:
        to_grayscale(data)
    assert time.perf_counter() - started < 1.0
    peak_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert peak_growth_kib < 50_000  # nothing like the 10 GB the pixels would take
    _assert_one_line(exc)


def test_pillow_warning_range_bomb_is_ours_to_refuse_and_warns_nothing() -> None:
    # 120 MP: above Pillow's warning threshold (~89 MP), below its error (~179 MP).
    data = _bomb(12_000, 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LimitExceeded, match=r"over the limit of 100000000 pixels"):
            to_grayscale(data)


def test_pillow_bomb_limit_does_not_override_max_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make Pillow's own guard far stricter than max_pixels: it must neither warn
    # nor refuse; max_pixels alone decides.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.new("RGB", (64, 64), GREEN), "PNG")  # 4096 px > 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_grayscale(data)
    with pytest.raises(LimitExceeded, match=r"64x64 = 4096 pixels, over the limit of 4000"):
        to_grayscale(data, max_pixels=4000)
    monkeypatch.undo()  # so that the test itself can open the result
    assert decode(out).getpixel((5, 5)) == GREEN_L


def test_invalid_max_pixels_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        to_grayscale(encode(Image.new("L", (2, 2)), "PNG"), max_pixels=0)


def test_pillow_global_state_is_unchanged() -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    to_grayscale(encode(_rgba_source(), "PNG"))
    with pytest.raises(LimitExceeded):
        to_grayscale(_bomb(12_000, 10_000))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters)) == (
        before
    )
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_example_image_is_a_colourful_photo_that_turns_grey() -> None:
    path = Path(__file__).parents[2] / "examples" / "image.jpg"
    data = path.read_bytes()
    assert len(data) <= 250 * 1024
    source = decode(data)
    assert (source.format, source.mode) == ("JPEG", "RGB")
    saturation = source.convert("HSV").getchannel("S")
    assert sum(saturation.histogram()[128:]) > source.width * source.height // 4  # colourful
    out = decode(to_grayscale(data))
    assert (out.format, out.mode, out.size) == ("JPEG", "L", source.size)
