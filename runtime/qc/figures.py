"""Pictures for the QC reports: orthogonal views as PNG data URIs, with numpy and zlib only.

The runtime install has no imaging library (matplotlib is in the ``data`` extra),
and a report must still be written wherever `mri2mri-run` runs, so the few
things needed are done here: window the intensities, correct the voxel aspect,
paint edges, and encode an RGB PNG (signature, IHDR, one zlib-compressed IDAT,
IEND: the format's minimal valid file).
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.runtime.imaging.orientation import to_canonical

VIEWS = ("axial", "coronal", "sagittal")
#: Height of each view in the report, in pixels.
VIEW_HEIGHT = 180
EDGE_RGB = (255, 40, 40)


def orthogonal_views(volume: np.ndarray, centre: Sequence[int] | None = None
                     ) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through `centre` (default: the middle voxel).

    `volume` is RAS-ordered (`to_canonical`); the slices are transposed for
    ``imshow(origin="lower")``: anterior and superior up, the subject's left on the
    right of the axial and coronal views (radiological left-right is not used).
    """
    x, y, z = (s // 2 for s in volume.shape[:3]) if centre is None else centre
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]


def view_aspects(affine: np.ndarray) -> list[float]:
    """imshow aspect ratios of `orthogonal_views` for a canonical grid with this affine."""
    zooms = nib.affines.voxel_sizes(affine)
    return [zooms[1] / zooms[0], zooms[2] / zooms[0], zooms[2] / zooms[1]]


def canonical(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    """(RAS+ data, its affine) of a 3D image."""
    view = to_canonical(img, np.asarray(img.dataobj, dtype=np.float32))
    return view.data, view.affine


def display_range(volume: np.ndarray) -> tuple[float, float]:
    """0 to the 99.5th percentile of positive voxels: robust to a few hot voxels."""
    positive = volume[volume > 0]
    return 0.0, float(np.percentile(positive, 99.5)) if positive.size else 1.0


def png_bytes(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 array as a PNG file (8-bit RGB, no interlace, filter 0)."""
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8),
                           np.ascontiguousarray(rgb, np.uint8).reshape(height, width * 3)],
                          axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


def png_uri(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 array as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


def _display(view: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """A view resampled to `shape` pixels (rows, columns), top row = superior/anterior."""
    zoom = (shape[0] / view.shape[0], shape[1] / view.shape[1])
    out = ndimage.zoom(view.astype(np.float32), zoom, order=order)[:shape[0], :shape[1]]
    out = np.pad(out, ((0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1])))
    return np.flipud(out)


def _panel(view: np.ndarray, shape: tuple[int, int], *, low: float, high: float,
           edges: np.ndarray | None) -> np.ndarray:
    """One view at `shape` pixels, padded to VIEW_HEIGHT rows, edges outlined."""
    grey = _display(view, shape, order=1)
    scaled = np.clip((grey - low) / max(high - low, 1e-12), 0, 1)
    rgb = np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)
    if edges is not None:
        mask = _display(edges.astype(np.float32), shape, order=0) > 0.5
        outline = mask & ~ndimage.binary_erosion(mask)
        rgb[outline] = EDGE_RGB
    top = (VIEW_HEIGHT - shape[0]) // 2
    return np.pad(rgb, ((top, VIEW_HEIGHT - shape[0] - top), (0, 0), (0, 0)))


def _view_shapes(data_shape: Sequence[int], affine: np.ndarray) -> list[tuple[int, int]]:
    """Pixel sizes of the three views at one common scale (mm per pixel): the longest
    side of any view is VIEW_HEIGHT, so the views show the head at the same size."""
    zx, zy, zz = nib.affines.voxel_sizes(affine)
    nx, ny, nz = data_shape[:3]
    mm = [(ny * zy, nx * zx), (nz * zz, nx * zx), (nz * zz, ny * zy)]  # (rows, cols)
    scale = VIEW_HEIGHT / max(r for r, _ in mm)
    return [(max(1, round(r * scale)), max(1, round(c * scale))) for r, c in mm]


def three_views(img: nib.spatialimages.SpatialImage, edges: np.ndarray | None = None) -> str:
    """Axial, coronal and sagittal central slices side by side, as a PNG data URI.

    `edges` (a boolean volume on the image's canonical grid) are outlined in red.
    """
    data, affine = canonical(img)
    low, high = display_range(data)
    edge_views = orthogonal_views(edges) if edges is not None else [None] * 3
    panels = [_panel(v, shape, low=low, high=high, edges=e) for v, shape, e in
              zip(orthogonal_views(data), _view_shapes(data.shape, affine), edge_views,
                  strict=True)]
    gap = np.zeros((VIEW_HEIGHT, 6, 3), np.uint8)
    parts: list[np.ndarray] = []
    for panel in panels:
        parts += [panel, gap]
    return png_uri(np.concatenate(parts[:-1], axis=1))
