"""Make examples/image.jpg, the demo's colourful photo-like input.

The demo turns this image black-and-white, so it is built to make the change
obvious: saturated hues that become clearly different greys, smooth gradients
(where banding would show) and a little sensor-like noise (so it compresses
like a photo, not like a drawing).  A fixed seed makes it reproducible::

    python examples/make_image.py            # writes examples/image.jpg
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 800, 600
SEED = 20240601
QUALITY = 85


def make_image(seed: int = SEED) -> Image.Image:
    """Return the 800x600 RGB picture: a sky-to-field gradient, a sun, shapes, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    horizon = HEIGHT * 0.62
    sky = y < horizon
    # Sky: deep blue at the top to warm orange at the horizon; field: green to ochre.
    t_sky = y / horizon
    t_field = (y - horizon) / (HEIGHT - horizon)
    red = np.where(sky, 30 + 225 * t_sky, 60 + 120 * t_field + 20 * np.sin(x / 37.0))
    green = np.where(sky, 70 + 110 * t_sky, 150 - 40 * t_field + 15 * np.sin(x / 53.0 + y / 29.0))
    blue = np.where(sky, 200 - 120 * t_sky, 40 + 10 * t_field)
    pixels = np.stack([red, green, blue], axis=-1)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(image)
    draw.ellipse((560, 90, 700, 230), fill=(255, 214, 40))  # sun
    draw.polygon([(0, 372), (180, 200), (360, 372)], fill=(110, 60, 140))  # violet hill
    draw.rectangle((420, 300, 520, 420), fill=(220, 30, 40))  # red barn
    draw.polygon([(410, 300), (470, 250), (530, 300)], fill=(120, 20, 20))  # roof
    draw.rectangle((455, 360, 485, 420), fill=(250, 250, 245))  # door
    for i in range(7):  # a row of cyan and magenta flowers
        cx, cy = 60 + i * 95, 520 + (i % 2) * 25
        colour = (0, 200, 220) if i % 2 else (230, 0, 160)
        draw.ellipse((cx - 18, cy - 18, cx + 18, cy + 18), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.2))  # soften edges like a lens

    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 6.0, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def main() -> int:
    """Write the picture next to this script."""
    target = Path(__file__).with_name("image.jpg")
    make_image().save(target, "JPEG", quality=QUALITY)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
