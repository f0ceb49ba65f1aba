"""A contact sheet of a verify run: input frames, output frames and both mouth crops, labelled.

Loaded by path by checks.py (the preview check) in the tree's interpreter (numpy and Pillow: diffusers needs Pillow,
so every tree's stack has it).
"""

from __future__ import annotations

from pathlib import Path

THUMB = 128  # pixels per frame on the sheet
MARGIN = 8
LABEL_WIDTH = 96


def _pick(count: int, most: int) -> list[int]:
    if count <= most:
        return list(range(count))
    return [round(i * (count - 1) / (most - 1)) for i in range(most)]


def mouth_box(width: int, height: int, mouth: tuple[float, float]) -> tuple[int, int, int, int]:
    """The region check_output measures (left, top, right, bottom)."""
    half = max(2, height // 10)
    cx, cy = mouth
    return int(cx) - 2 * half, int(cy) - half, int(cx) + 2 * half, int(cy) + half


def contact_sheet(path: Path, inputs, outputs, mouth: tuple[float, float], title: str, most: int = 6) -> Path:
    """Write the sheet to `path`: a row each of input frames, output frames, input and output mouths."""
    from PIL import Image, ImageDraw

    chosen = _pick(min(len(inputs), len(outputs)), most)
    height, width = outputs.shape[1:3]
    box = mouth_box(width, height, mouth)
    scale = THUMB / max(height, width)
    thumb = (max(1, round(width * scale)), max(1, round(height * scale)))
    rows = [
        ("input", [Image.fromarray(inputs[i]).resize(thumb) for i in chosen]),
        ("output", [Image.fromarray(outputs[i]).resize(thumb) for i in chosen]),
        ("mouth in", [Image.fromarray(inputs[i]).crop(box).resize((thumb[0], thumb[0] // 2)) for i in chosen]),
        ("mouth out", [Image.fromarray(outputs[i]).crop(box).resize((thumb[0], thumb[0] // 2)) for i in chosen]),
    ]
    header = 44
    sheet_width = LABEL_WIDTH + len(chosen) * (thumb[0] + MARGIN) + MARGIN
    sheet_height = header + sum(images[0].height + MARGIN for _, images in rows) + MARGIN
    sheet = Image.new("RGB", (sheet_width, sheet_height), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, 6), title, fill=(235, 235, 235))
    top = header
    for label, images in rows:
        draw.text((MARGIN, top + images[0].height // 2 - 6), label, fill=(200, 200, 200))
        for column, image in enumerate(images):
            left = LABEL_WIDTH + MARGIN + column * (thumb[0] + MARGIN)
            sheet.paste(image, (left, top))
            if label in ("input", "output"):  # where the mouth crop comes from
                x0, y0, x1, y1 = (round(v * scale) for v in box)
                draw.rectangle((left + x0, top + y0, left + x1, top + y1), outline=(255, 210, 0))
        top += images[0].height + MARGIN
    for index, frame in enumerate(chosen):
        left = LABEL_WIDTH + MARGIN + index * (thumb[0] + MARGIN)
        draw.text((left, header - 16), f"frame {frame}", fill=(150, 150, 150))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
