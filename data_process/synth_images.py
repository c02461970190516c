"""The synthetic images: three procedural "modalities" (CT-, MRI-, X-ray-like) and an optional bright disc "lesion".

Pixel contract (data_process/synth.py's guarantees rest on it): every lesion pixel has all channels >= LESION_MIN, every
other pixel all channels <= BACKGROUND_MAX; the box returned is the tight box of the lesion pixels.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

MODALITIES = ("CT", "MRI", "X-ray")
QUADRANTS = (("upper", "left"), ("upper", "right"), ("lower", "left"), ("lower", "right"))
MIN_SIZE = 32
BACKGROUND_MAX = 212   # every non-lesion pixel has all channels <= this
LESION_MIN = 235       # every lesion pixel has all channels >= this
# Per-modality channel gains (R, G, B), applied to the background only: CT neutral, MRI warm, X-ray cool.
TINT = {"CT": (1.0, 1.0, 1.0), "MRI": (1.0, 0.86, 0.66), "X-ray": (0.60, 0.82, 1.0)}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates relative to the image centre, in units of the image size (-0.5 .. 0.5)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size - 0.5
    return np.meshgrid(c, c)  # u (x, columns), v (y, rows)


def _ct(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Axial body cross-section: black surround, grey ellipse with a bright rim, dark 'lungs', a 'spine'."""
    u, v = _grid(size)
    cu, cv = rng.uniform(-0.02, 0.02, 2)
    a, b = rng.uniform(0.44, 0.46), rng.uniform(0.37, 0.40)
    rho = np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)
    img = np.zeros((size, size))
    img[rho <= 1.0] = rng.uniform(105, 115)
    img[(rho > 0.90) & (rho <= 1.0)] = rng.uniform(180, 195)
    for side in (-1, 1):  # lungs
        lu, lv = cu + side * rng.uniform(0.17, 0.22), cv + rng.uniform(-0.08, 0.0)
        la, lb = rng.uniform(0.11, 0.13), rng.uniform(0.18, 0.21)
        img[((u - lu) / la) ** 2 + ((v - lv) / lb) ** 2 <= 1.0] = rng.uniform(25, 45)
    sr = rng.uniform(0.05, 0.07)  # vertebral body
    img[(u - cu) ** 2 + (v - cv - 0.27) ** 2 <= sr ** 2] = rng.uniform(170, 190)
    return img


def _mri(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Head-like ellipse filled with smooth blobs and a fine gyral texture; near-black surround."""
    u, v = _grid(size)
    cu, cv = rng.uniform(-0.02, 0.02, 2)
    a, b = rng.uniform(0.44, 0.47), rng.uniform(0.46, 0.49)
    inside = ((u - cu) / a) ** 2 + ((v - cv) / b) ** 2 <= 1.0
    tissue = np.full((size, size), rng.uniform(160, 170))
    for k in range(6):  # alternating bright / dark blobs keep the mean stable
        bu, bv = rng.uniform(-0.3, 0.3, 2)
        sig, amp = rng.uniform(0.06, 0.12), (1.0 if k % 2 else -1.0) * rng.uniform(25, 40)
        tissue += amp * np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sig * sig))
    fu, fv, ph = rng.uniform(5, 9), rng.uniform(5, 9), rng.uniform(0, 2 * np.pi)
    tissue += 14 * np.sin(2 * np.pi * (fu * u + fv * v) + ph)
    img = np.full((size, size), 8.0)
    img[inside] = np.clip(tissue, 60, 205)[inside]
    return img


def _xray(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Projection film: dark graded background over the whole frame, bright vertical bone-like bars."""
    u, v = _grid(size)
    img = rng.uniform(84, 90) + rng.uniform(15, 25) * (v + 0.5) - 25 * (u ** 2 + v ** 2)
    centres = np.sort(rng.uniform(-0.42, 0.42, 3))
    for xc in centres:
        half_w = rng.uniform(0.04, 0.05)
        bone = np.clip(1.0 - np.abs(u - xc - 0.03 * np.sin(2 * np.pi * v)) / half_w, 0, 1) ** 0.5
        img = np.maximum(img, rng.uniform(170, 195) * bone)
    return img


_DRAW = {"CT": _ct, "MRI": _mri, "X-ray": _xray}


def render(rng: np.random.RandomState, size: int, modality: str, quadrant: tuple[str, str] | None
           ) -> tuple[np.ndarray, list[int] | None]:
    """One image (uint8 HxWx3) and the tight xyxy box of its lesion (None when there is none).

    The background is drawn before the lesion from the same generator, so the same seed with quadrant=None
    gives the same background: the two images differ only inside the box."""
    grey = _DRAW[modality](rng, size)
    grey = grey + rng.normal(0.0, 3.0, grey.shape)
    rgb = np.clip(grey, 0, BACKGROUND_MAX)[..., None] * np.asarray(TINT[modality])[None, None, :]
    if quadrant is None:
        return np.round(rgb).astype(np.uint8), None
    vert, horiz = quadrant
    r = max(2, int(round(size / 10 * rng.uniform(0.85, 1.15))))
    dx, dy = rng.uniform(r + 1.5, r + 1.5 + 0.07 * size, 2)
    cx = size / 2 + (dx if horiz == "right" else -dx)
    cy = size / 2 + (dy if vert == "lower" else -dy)
    xs = np.arange(size) + 0.5
    mask = (xs[None, :] - cx) ** 2 + (xs[:, None] - cy) ** 2 <= r * r
    val = np.clip(rng.normal(246.0, 3.0, (size, size)), LESION_MIN, 255)
    rgb[mask] = val[mask][:, None]
    ys, xs_ = np.nonzero(mask)
    box = [int(xs_.min()), int(ys.min()), int(xs_.max()) + 1, int(ys.max()) + 1]
    return np.round(rgb).astype(np.uint8), box


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG bytes of an image array (fixed compression level: the same pixels give the same bytes)."""
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()

