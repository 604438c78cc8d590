"""Turn an encoded image black-and-white: bytes in, bytes out.

This is the pixel work behind cloudworker's image task, kept free of Celery and
boto3 so that it can be tested, timed and reasoned about on its own.  The one
entry point, :func:`to_grayscale`, decodes what people actually upload (phone
photos with EXIF orientation, CMYK JPEGs from print workflows, palette and
16-bit PNGs, transparent stickers, animated GIFs) and writes an 8-bit grey
image back in the same format, or in a format the caller names.

Decisions, and why:

* **Grey is ITU-R 601 luma**, ``L = R*299/1000 + G*587/1000 + B*114/1000``,
  which is Pillow's ``RGB -> L`` conversion and also the Y channel that JPEG
  stores, so JPEG input can be decoded straight to grey (``draft('L')``) and
  still give the same grey as every other path.
* **16-bit samples are scaled with ``value >> 8``** (the high byte), not
  clipped: Pillow's own ``convert('L')`` clips every 16-bit value above 255 to
  white.  ``>> 8`` is what Pillow (and libpng) already do when they open 16-bit
  RGB and RGBA PNGs as 8-bit, so a 16-bit grey PNG and a 16-bit colour PNG of
  the same picture come out alike; it inverts the usual 8 -> 16 bit widening
  (``v * 257``) exactly and is the cheapest correct choice (a byte slice).
  Mode ``I`` (32-bit) is taken to hold 16-bit data, since that is where Pillow
  used to put 16-bit PNGs: it is clipped to 0..65535 and then scaled.
  Floating-point (``F``) images have no agreed range; Pillow's conversion
  clips them to 0..255, and that is kept.
* **Alpha is kept** (output mode ``LA``) where the output format holds it:
  PNG, WebP, TIFF, GIF, AVIF, JPEG 2000, TGA, ICO, ICNS and DDS.  Anywhere
  else (JPEG, BMP, PPM, ...) the image is flattened onto **white**, so a fully
  transparent pixel becomes 255, the way a transparent logo looks on a page.
* **GIF alpha** uses the GIF transparency index: pixels with alpha < 128 become
  transparent (GIF transparency is on/off), the rest keep their grey.  The
  index is a grey level no opaque pixel uses, so every grey level stays exact;
  only if all 256 levels are in use is the rarest one merged into a neighbour.
* **Animations** (GIF, WebP, APNG) and multi-page TIFFs keep **all frames**,
  with their durations and loop count, when the output format is the input
  format: a user who sends an animated GIF expects an animated grey GIF.  When
  converting to another format only the first frame is written (JPEG and BMP
  have no frames; cross-format animation is not worth the edge cases).  An MPO
  (a JPEG with a second, preview/depth picture, as some phones write) is
  written as a plain JPEG of its first picture.
* **JPEG output is quality 90, baseline, ``optimize`` off**: 90 keeps
  re-encoding loss below what the eye sees in grey photos, ``optimize`` costs
  an extra Huffman pass for a few per cent.  **PNG uses ``compress_level=3``**:
  on an 800x600 grey photo zlib level 6 (Pillow's default) took ~80 ms for
  185 KB where level 3 took ~18 ms for 207 KB; a worker pays CPU per image,
  storage is cheap.  **WebP** is lossless when the source was lossless (a
  lossless WebP, or any format but JPEG), otherwise quality 90.  **TIFF** is
  LZW-compressed (lossless and readable everywhere).  Other formats use
  Pillow's defaults.
* **Metadata is not copied**: the pixels are upright (EXIF orientation is
  applied with :func:`PIL.ImageOps.exif_transpose`), the ICC profile described
  colours that no longer exist, and the rest (GPS, camera, thumbnails) is
  private or stale.  So no orientation tag can rotate the output again.
* **Inputs are limited to JPEG (and MPO), PNG, GIF, WebP, TIFF and BMP**: what
  people send, and a smaller attack surface than every format Pillow knows
  (EPS, for example, would run Ghostscript).
* **Size limit**: ``max_pixels`` bounds width x height x frames decoded and is
  checked from headers before any pixel data is decoded.  Pillow's own
  decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) is not the limit: its
  warning is silenced for the duration of the call, and if it refuses an image
  outright the image is re-opened without the guard so that ``max_pixels``
  decides.  (GIF frames that grow the canvas beyond twice Pillow's limit are
  still refused by Pillow mid-file; that is reported as ``LimitExceeded`` too.)

The module changes no global Pillow state.  ``warnings.catch_warnings`` is used
to silence Pillow's warning; it swaps the process-wide warning filters for the
duration of a call, which is harmless in Celery's prefork pool (one task per
process) but could hide a ``DecompressionBombWarning`` raised meanwhile by
another thread's Pillow call.
"""

from __future__ import annotations

import struct
import sys
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from typing import Any, Final

from PIL import Image, ImageChops, ImageFile, ImageOps, UnidentifiedImageError

from cloudworker import InvalidImage, InvalidInput, LimitExceeded

__all__ = [
    "INPUT_EXTENSIONS",
    "SUPPORTED_INPUT_FORMATS",
    "SUPPORTED_OUTPUT_FORMATS",
    "check_output_format",
    "image_format_for_extension",
    "to_grayscale",
]

JPEG_QUALITY: Final = 90
WEBP_QUALITY: Final = 90
PNG_COMPRESS_LEVEL: Final = 3
TIFF_COMPRESSION: Final = "tiff_lzw"
GIF_ALPHA_THRESHOLD: Final = 128
"""GIF transparency is on/off: alpha below this is transparent, the rest opaque."""

SUPPORTED_INPUT_FORMATS: Final[frozenset[str]] = frozenset(
    {"BMP", "GIF", "JPEG", "MPO", "PNG", "TIFF", "WEBP"}
)
"""Formats accepted as input (MPO arrives through Pillow's JPEG opener)."""

# What Image.open is asked to try, most common first.  MPO is not listed
# because Pillow's JPEG opener returns an MpoImageFile for MPO data.
_OPEN_FORMATS: Final = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")

# Output formats that store an alpha channel (GIF through its transparency index).
_ALPHA_FORMATS: Final = frozenset(
    {"PNG", "WEBP", "TIFF", "GIF", "AVIF", "JPEG2000", "TGA", "ICO", "ICNS", "DDS"}
)
# Formats whose frames are all converted when the output format is the input format.
_MULTI_FRAME_FORMATS: Final = frozenset({"GIF", "WEBP", "PNG", "TIFF"})
# Input formats written as another format when the caller names none.
_DEFAULT_OUTPUT: Final = {"MPO": "JPEG"}
# Exceptions Pillow raises for bad image data (besides DecompressionBombError).
_PILLOW_DATA_ERRORS: Final = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
)
# Leading bytes of the supported formats, to explain data Pillow could not open.
_MAGIC: Final = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def _grey_savable_formats() -> frozenset[str]:
    """Return the formats with a file extension that Pillow can write an ``L`` image in.

    ``Image.SAVE`` alone over-promises: it lists stub handlers (BUFR, GRIB, HDF5,
    WMF) that raise unless an application installs an encoder, and formats that
    only take other modes (XBM and MSP are 1-bit, QOI is RGB).  Saving a 1x1
    grey image to memory asks Pillow itself, once, at import (~10 ms), and stays
    right as Pillow gains or loses plugins.  Formats whose writer warns that it
    is deprecated (IM, in Pillow 13) are left out rather than offered for a
    while and then withdrawn.
    """
    probe = Image.new("L", (1, 1))
    savable: set[str] = set()
    for fmt in set(Image.registered_extensions().values()):
        if fmt not in Image.SAVE:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                probe.save(BytesIO(), fmt)
            except Exception:  # noqa: BLE001 - any failure means "cannot write 8-bit grey"
                continue
        if not any(issubclass(w.category, DeprecationWarning) for w in caught):
            savable.add(fmt)
    return frozenset(savable)


SUPPORTED_OUTPUT_FORMATS: Final[frozenset[str]] = _grey_savable_formats()
"""Pillow format names an 8-bit grey image can be written in (``'JPEG'``, ``'PNG'``, ...)."""

INPUT_EXTENSIONS: Final[frozenset[str]] = frozenset(
    ext.lower()
    for ext, fmt in Image.registered_extensions().items()
    if fmt in SUPPORTED_INPUT_FORMATS
)
"""File extensions (``'.jpg'``, ...) Pillow gives the formats accepted as input."""

_EXTENSION_FORMATS: Final[dict[str, str]] = {
    ext.lower(): fmt
    for ext, fmt in Image.registered_extensions().items()
    if fmt in SUPPORTED_OUTPUT_FORMATS
}


def image_format_for_extension(ext_or_filename: str) -> str:
    """Return the Pillow format name for a file extension or file name.

    ``'.jpg'``, ``'jpg'`` and ``'photo.JPEG'`` give ``'JPEG'``; ``'.tif'`` gives
    ``'TIFF'``.  Callers usually know the name of the file they want back rather
    than Pillow's format names, and Pillow's own extension table is the one
    that decides what a file is, so it is the table used here, restricted to
    :data:`SUPPORTED_OUTPUT_FORMATS`.

    Raises:
        InvalidImage: no format Pillow can write grey images in has that extension.
    """
    name = ext_or_filename.strip().replace("\\", "/").rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1] if "." in name else name
    fmt = _EXTENSION_FORMATS.get("." + suffix.lower()) if suffix else None
    if fmt is None:
        raise InvalidImage(
            f"unsupported output format {ext_or_filename!r}: no image format Pillow "
            "can write has that extension"
        )
    return fmt


def check_output_format(output_format: object) -> None:
    """Raise :class:`InvalidImage` unless ``output_format`` is None or one we can write."""
    if output_format is not None:
        _resolve_output_format(output_format)


def _resolve_output_format(output_format: object) -> str:
    """Validate a caller's output format: a Pillow format name, or an extension.

    Accepting ``'jpg'`` as well as ``'JPEG'`` costs nothing and saves a round
    trip for the most common mistake. A message can carry any JSON value here.
    """
    if not isinstance(output_format, str) or len(output_format) > 64:
        raise InvalidImage(
            f"output format must be a format name such as 'JPEG' or 'png', "
            f"not {type(output_format).__name__} {output_format!r:.40}"
        )
    name = output_format.strip().upper()
    if name in SUPPORTED_OUTPUT_FORMATS:
        return name
    try:
        return image_format_for_extension(output_format)
    except InvalidImage:
        supported = ", ".join(sorted(SUPPORTED_OUTPUT_FORMATS))
        raise InvalidImage(
            f"unsupported output format {output_format!r}: Pillow cannot write grey "
            f"images in it (supported: {supported})"
        ) from None


def to_grayscale(
    data: bytes, *, output_format: str | None = None, max_pixels: int = 100_000_000
) -> bytes:
    """Return ``data`` re-encoded as an 8-bit black-and-white image.

    The output is Pillow mode ``L`` (ITU-R 601 luma), or ``LA`` when the input
    has transparency and the output format can store it; see the module
    docstring for why each choice was made.

    Args:
        data: the encoded image (JPEG, MPO, PNG, GIF, WebP, TIFF or BMP).
        output_format: a Pillow format name such as ``'JPEG'`` or ``'png'``
            (case-insensitive; an extension such as ``'jpg'`` is accepted too).
            Defaults to the input's format (JPEG for MPO).
        max_pixels: the most pixels (width x height x frames decoded) to
            decode.  Checked from the headers before decoding.

    Raises:
        InvalidImage: empty, unreadable, truncated, corrupt or zero-size input,
            or an output format Pillow cannot write grey images in.
        LimitExceeded: the image has more pixels than ``max_pixels``.
        ValueError: ``max_pixels`` is not positive (a programming error).
    """
    if not data:
        raise InvalidImage("image is empty")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    target = None if output_format is None else _resolve_output_format(output_format)

    with warnings.catch_warnings():
        # Pillow warns above Image.MAX_IMAGE_PIXELS; max_pixels is our limit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _open(data) as im:
            source_format = str(im.format)
            fmt = target or _DEFAULT_OUTPUT.get(source_format, source_format)
            multi = fmt == source_format and fmt in _MULTI_FRAME_FORMATS
            frames, durations = _grey_frames(im, source_format, multi, max_pixels)
            loop = im.info.get("loop")
            lossy_source = source_format in ("JPEG", "MPO") or (
                source_format == "WEBP" and not _webp_is_lossless(data)
            )
            return _encode(frames, fmt, durations, loop, lossless=not lossy_source)


@contextmanager
def _pillow_errors(context: str) -> Iterator[None]:
    """Turn Pillow's exceptions for bad data into cloudworker's, with one-line reasons.

    Pillow signals bad data with whatever the failing layer raised (OSError for
    truncation, SyntaxError for broken headers, struct.error, EOFError, ...);
    callers should only ever have to catch ``InvalidInput``.  ``context`` says
    what was being done ("PNG image is truncated or corrupt") and Pillow's own
    message, appended, says what went wrong.
    """
    try:
        yield
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:  # e.g. a GIF frame growing the canvas
        raise LimitExceeded(f"image is too large: {_one_line(exc)}") from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise InvalidImage(f"{context}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """Return an exception's message on one line (or its type if it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _open(data: bytes) -> ImageFile.ImageFile:
    """Identify the image and read its header, without decoding pixel data."""
    try:
        return Image.open(BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError:
        # Pillow refuses sizes over 2 * MAX_IMAGE_PIXELS in Image.open itself.
        # max_pixels is the limit here, so open the image the way Image.open
        # does, minus that check; the caller then applies max_pixels to it.
        try:
            im = _open_without_pillow_limit(data)
        except Image.DecompressionBombError as exc:  # an opener that checks by itself (MPO)
            raise LimitExceeded(f"image is too large: {_one_line(exc)}") from exc
        if im is None:  # Image.open identified it a moment ago; be safe anyway
            raise LimitExceeded(
                "image is larger than Pillow's decompression-bomb limit of "
                f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels"
            ) from None
        return im
    except UnidentifiedImageError:
        raise InvalidImage(_unreadable_reason(data)) from None
    except _PILLOW_DATA_ERRORS as exc:  # a plugin accepted the data, then failed on it
        raise InvalidImage(_unreadable_reason(data, _one_line(exc))) from exc


def _open_without_pillow_limit(data: bytes) -> ImageFile.ImageFile | None:
    """Open ``data`` as ``Image.open`` does but without ``MAX_IMAGE_PIXELS``.

    Uses Pillow's registry of openers (``Image.OPEN``), the same table
    ``Image.open`` walks.  Only header parsing happens here.
    """
    prefix = data[:16]
    for fmt in _OPEN_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None:
            accepted = accept(prefix)
            if not accepted or isinstance(accepted, str):
                continue
        try:
            return factory(BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    return None


def _unreadable_reason(data: bytes, detail: str | None = None) -> str:
    """Explain, in one line, why Pillow could not identify ``data``.

    Pillow's own message names only the BytesIO object (or, when a plugin
    gave up half-way, says something like "Truncated File Read"); the caller
    needs to know whether they sent a damaged image, an empty picture or
    something that is not an image at all.
    """
    size = _header_size(data)
    if size is not None and 0 in size:
        return f"image has zero size ({size[0]}x{size[1]})"
    suffix = f" ({detail})" if detail else ""
    sniffed = _sniff_format(data)
    if sniffed is not None:
        return (
            f"not an image Pillow can read: looks like {sniffed} but its header is "
            f"damaged or truncated{suffix}"
        )
    if detail:
        return f"not an image Pillow can read: {detail}"
    sample = data[:512]
    printable = sum(32 <= byte < 127 or byte in b"\t\n\r" for byte in sample)
    if printable >= 0.95 * len(sample):
        return "not an image Pillow can read: the data is text"
    supported = ", ".join(sorted(SUPPORTED_INPUT_FORMATS))
    return (
        f"not an image Pillow can read: unknown format (starts with {data[:8].hex(' ')}; "
        f"supported: {supported})"
    )


def _sniff_format(data: bytes) -> str | None:
    """Name the supported format whose signature ``data`` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Read width and height from PNG, GIF and BMP headers at their fixed offsets.

    Pillow refuses zero-size images while identifying them, so this is how a
    zero-size image gets a message that says so.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data.startswith(b"BM") and len(data) >= 26 and struct.unpack("<I", data[14:18])[0] >= 40:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    return None


def _webp_is_lossless(data: bytes) -> bool:
    """Tell whether a WebP file's (first) picture is lossless (VP8L) or lossy (VP8).

    Pillow does not report it, and it decides whether a WebP output may add
    loss.  RIFF chunks are walked; an animation frame (ANMF) is entered by
    skipping its 16-byte frame header, so its picture chunk is found next.
    """
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        if fourcc == b"ANMF":
            pos += 8 + 16
            continue
        pos += 8 + size + (size & 1)
    return False


def _grey_frames(
    im: ImageFile.ImageFile, source_format: str, multi: bool, max_pixels: int
) -> tuple[list[Image.Image], list[float]]:
    """Decode the frames to write, each as an upright ``L`` or ``LA`` image.

    Before each frame is decoded, its header size is checked against
    ``max_pixels`` assuming the frames still to come are as large (a GIF canvas
    only grows), so no pixel data is decoded for an image over the limit.
    """
    with _pillow_errors(f"{source_format} image is corrupt"):
        count = int(getattr(im, "n_frames", 1)) if multi else 1
    frames: list[Image.Image] = []
    durations: list[float] = []
    decoded = 0
    for index in range(count):
        context = f"{source_format} image is truncated or corrupt"
        if index:
            with _pillow_errors(context):
                im.seek(index)
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InvalidImage(f"image has zero size ({width}x{height})")
        if decoded + width * height * (count - index) > max_pixels:
            raise LimitExceeded(_limit_message(width, height, count, max_pixels))
        decoded += width * height
        with _pillow_errors(context):
            upright = _decode_upright(im, in_place=count == 1)
        with _pillow_errors(f"cannot convert a {upright.mode} image to grey"):
            grey = _to_grey(upright)
        grey.info = {}  # metadata is not carried over (see the module docstring)
        frames.append(grey)
        duration = im.info.get("duration", 0)
        durations.append(float(duration) if isinstance(duration, (int, float)) else 0.0)
    return frames, durations


def _limit_message(width: int, height: int, count: int, max_pixels: int) -> str:
    """Name the image's size and the limit it broke."""
    if count == 1:
        return (
            f"image is {width}x{height} = {width * height} pixels, over the limit "
            f"of {max_pixels} pixels"
        )
    return (
        f"image is {width}x{height} pixels x {count} frames = {width * height * count} "
        f"pixels, over the limit of {max_pixels} pixels"
    )


def _decode_upright(im: ImageFile.ImageFile, *, in_place: bool) -> Image.Image:
    """Decode the current frame of ``im`` and apply its EXIF orientation.

    For a colour JPEG, ``draft('L')`` (which must precede ``load``) makes
    libjpeg output its stored luma channel and skip chroma IDCT, upsampling
    and colour conversion entirely: most of the decode time.  CMYK JPEGs keep
    their mode under ``draft`` and take the general path.  A single frame is
    transposed in place (no copy: the image object is ours and is not seeked
    again); frames of an animation are transposed into a new image, since
    Pillow composites the next frame onto the current one.
    """
    if im.format in ("JPEG", "MPO") and im.mode == "RGB" and in_place:
        im.draft("L", im.size)
    im.load()
    if in_place:
        ImageOps.exif_transpose(im, in_place=True)
        return im
    return ImageOps.exif_transpose(im)


def _to_grey(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to ``L``, or ``LA`` when it carries transparency.

    Pillow's conversions all use the same 601 luma; the exceptions handled
    here are 16-bit data (scaled, not clipped), transparency, which is
    normalised through RGBA so that palette alpha and ``tRNS`` colours count,
    and CIELab, which Pillow cannot convert to RGB: its L* (lightness) band
    is what grey means for Lab data.
    """
    mode = img.mode
    if mode == "I" or mode.startswith("I;16"):
        return _sixteen_bit_to_grey(img)
    if mode == "LAB":
        return img.getchannel("L")
    if mode == "La":  # premultiplied alpha: Pillow only un-premultiplies to LA
        return img.convert("LA")
    if not img.has_transparency_data:
        return img if mode == "L" else img.convert("L")
    if mode == "LA":
        return img
    if mode in ("L", "1"):
        return img.convert("LA")  # the "transparency" grey level becomes alpha 0
    rgba = img if mode == "RGBA" else img.convert("RGBA")
    return rgba.convert("LA")


def _sixteen_bit_to_grey(img: Image.Image) -> Image.Image:
    """Scale 16-bit grey (``I;16*``, or ``I`` clipped to 16 bits) to 8 bits by ``>> 8``.

    The high byte of each sample is sliced straight out of the raw buffer
    (``I;16``/``I;16L`` and native-order ``I;16N`` on little-endian machines
    store it second, ``I;16B`` first), which is exact and runs at memory speed.
    A ``tRNS`` grey level, which is a 16-bit value, becomes alpha 0 where both
    of its bytes match; Pillow's own conversion to ``LA`` clips before
    comparing and so misses it.
    """
    if img.mode == "I":
        img = img.convert("I;16")  # clips to 0..65535
    raw = img.tobytes()
    high_first = img.mode == "I;16B" or (img.mode == "I;16N" and sys.byteorder == "big")
    high = Image.frombytes("L", img.size, raw[0::2] if high_first else raw[1::2])
    transparency = img.info.get("transparency")
    if not isinstance(transparency, int):
        return high
    low = Image.frombytes("L", img.size, raw[1::2] if high_first else raw[0::2])
    high_match = high.point([255 if v == (transparency >> 8) & 0xFF else 0 for v in range(256)])
    low_match = low.point([255 if v == transparency & 0xFF else 0 for v in range(256)])
    alpha = ImageChops.invert(ImageChops.multiply(high_match, low_match))
    return Image.merge("LA", (high, alpha))


def _flatten_on_white(la: Image.Image) -> Image.Image:
    """Composite an ``LA`` image onto white, for formats without alpha."""
    white = Image.new("L", la.size, 255)
    white.paste(la.getchannel("L"), mask=la.getchannel("A"))
    return white


def _encode(
    frames: list[Image.Image],
    fmt: str,
    durations: list[float],
    loop: object,
    *,
    lossless: bool,
) -> bytes:
    """Write the grey frames as ``fmt`` with the settings chosen in the module docstring."""
    if any(frame.mode == "LA" for frame in frames):
        if fmt in _ALPHA_FORMATS:
            frames = [frame if frame.mode == "LA" else frame.convert("LA") for frame in frames]
        else:
            frames = [_flatten_on_white(frame) if frame.mode == "LA" else frame for frame in frames]

    params = _save_params(fmt, lossless=lossless)
    if fmt == "GIF" and frames[0].mode == "LA":
        frames, transparent_index = _gif_frames_with_transparency(frames)
        params.update(transparency=transparent_index)
        if len(frames) > 1:
            params.update(disposal=2)  # clear to transparent before each full frame

    if len(frames) > 1:
        params.update(save_all=True, append_images=frames[1:])
        if fmt in ("GIF", "WEBP", "PNG"):
            params.update(duration=durations)
            if isinstance(loop, int):
                params.update(loop=loop)

    buffer = BytesIO()
    with _pillow_errors(f"cannot write the image as {fmt}"):
        frames[0].save(buffer, fmt, **params)
    return buffer.getvalue()


def _save_params(fmt: str, *, lossless: bool) -> dict[str, Any]:
    """Return the encoder settings for ``fmt`` chosen in the module docstring."""
    if fmt in ("JPEG", "MPO"):
        return {"quality": JPEG_QUALITY, "optimize": False}
    if fmt == "PNG":
        return {"compress_level": PNG_COMPRESS_LEVEL}
    if fmt == "WEBP":
        return {"lossless": True} if lossless else {"quality": WEBP_QUALITY}
    if fmt == "TIFF":
        return {"compression": TIFF_COMPRESSION}
    return {}


def _gif_frames_with_transparency(
    frames: Sequence[Image.Image],
) -> tuple[list[Image.Image], int]:
    """Turn ``LA`` frames into grey-palette ``P`` frames sharing one transparent index.

    A GIF palette has 256 entries and grey has 256 levels, so the transparent
    index is a grey level that no opaque pixel (in any frame) uses; its palette
    entry is white, so viewers that ignore transparency show white, as with
    flattening.  Only when every level is used is the rarest level merged into
    its neighbour (a one-level change to those pixels).
    """
    histogram = [0] * 256
    split: list[tuple[Image.Image, Image.Image]] = []
    for frame in frames:
        grey, alpha = frame.getchannel("L"), frame.getchannel("A")
        transparent = alpha.point([255 if a < GIF_ALPHA_THRESHOLD else 0 for a in range(256)])
        opaque_counts = grey.histogram(mask=ImageChops.invert(transparent))
        histogram = [total + count for total, count in zip(histogram, opaque_counts, strict=True)]
        split.append((grey, transparent))

    unused = [level for level in range(256) if histogram[level] == 0]
    if unused:
        index = unused[-1]
        remap = None
    else:
        index = min(range(256), key=lambda level: (histogram[level], level))
        remap = list(range(256))
        remap[index] = index + 1 if index < 255 else index - 1

    palette = [channel for level in range(256) for channel in (level, level, level)]
    palette[3 * index : 3 * index + 3] = [255, 255, 255]
    result: list[Image.Image] = []
    for grey, transparent in split:
        levels = grey if remap is None else grey.point(remap)
        indexed = Image.frombytes("P", levels.size, levels.tobytes())
        indexed.putpalette(palette)
        indexed.paste(index, mask=transparent)
        result.append(indexed)
    return result, index
