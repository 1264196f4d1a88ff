#!/usr/bin/env python3
"""Write the broken-image test set: an image folder (two classes) mixing awkward but valid
images with files that must be skipped with a reason. Needs Pillow.

    python3 tools/make_broken_images.py crates/retrain/tests/data/images/broken

Valid (decoded): 16-bit grayscale PNG, CMYK JPEG, 1x1 PNG, JPEG with EXIF orientation 6,
palette GIF, BMP, WebP, RGBA PNG, a file whose extension lies about its (valid) format.
Skipped: truncated JPEG, zero-byte file, text with a .jpg name, PNG declaring 100000 x 100000
pixels (decompression bomb), JPEG with a corrupt header.
"""
import io
import os
import struct
import sys
import zlib

from PIL import Image


def gradient(w, h):
    img = Image.new("RGB", (w, h))
    img.putdata([(x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), 128)
                 for y in range(h) for x in range(w)])
    return img


def save(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb():
    # A valid PNG header declaring 100000 x 100000 RGB pixels, with one tiny compressed row.
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 301)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def main(root):
    files = {}
    # Red top half, blue bottom half, 32 wide x 16 high; stored with EXIF orientation 6
    # (rotate 90 degrees clockwise to display), so the upright image is 16 x 32.
    marked = Image.new("RGB", (32, 16), (255, 0, 0))
    marked.paste((0, 0, 255), (0, 8, 32, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    files["ants/exif_rotated.jpg"] = save(marked, "JPEG", quality=95, exif=exif.tobytes())
    gray16 = Image.new("I;16", (20, 10))
    gray16.putdata([x * 3000 for y in range(10) for x in range(20)])
    files["ants/gray16.png"] = save(gray16, "PNG")
    files["ants/cmyk.jpg"] = save(Image.new("CMYK", (24, 24), (0, 255, 255, 0)), "JPEG", quality=95)
    files["ants/one_pixel.png"] = save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    files["ants/palette.gif"] = save(gradient(16, 16).convert("P"), "GIF")
    files["bees/plain.bmp"] = save(gradient(17, 13), "BMP")
    files["bees/plain.webp"] = save(gradient(20, 20), "WEBP", lossless=True)
    files["bees/alpha.png"] = save(gradient(12, 12).convert("RGBA"), "PNG")
    files["bees/png_named.jpg"] = save(gradient(14, 14), "PNG")
    jpeg = save(gradient(64, 64), "JPEG", quality=90)
    files["ants/truncated.jpg"] = jpeg[: len(jpeg) // 3]
    files["ants/empty.jpg"] = b""
    files["bees/not_an_image.jpg"] = b"<html><body>404 Not Found</body></html>\n"
    files["bees/bomb.png"] = png_bomb()
    files["bees/corrupt_header.jpg"] = jpeg[:2] + b"\xff\xc0\x00\x11\x08\xff\xff" + jpeg[9:200]
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    print(f"{len(files)} files in {root}")


if __name__ == "__main__":
    main(sys.argv[1])
