"""Registration error metrics between an estimated and a reference transform.

All transforms use DIPY's convention (static world point -> moving world point,
RAS+ mm). Parameter errors are taken about the brain centre `c`, so that a
rotation error does not show up as a spurious translation error:

- translation error: est(c) - ref(c), per axis (mm);
- rotation error: extrinsic x-y-z angles of R_est R_ref^T (rad); R_est is the
  closest rotation to the estimate's 3x3 part (polar decomposition), so a
  12-parameter affine is compared by its rotation.

The study reports the mean absolute value of the three components of each.

What a user of the aligned images sees is how far the brain's outline lands from
where it should: the **boundary error** takes points on the moving image's brain
surface, maps them into the static image's space with the estimate and with the
reference (the inverses of the static->moving maps), and averages the distance
between the two landing points (mm). Its surface variant keeps only the part of each
point's displacement across the surface (along the surface's normal where the
reference lands it): it ignores sliding along the surface, which a user cannot see,
and so is at most the boundary error. (A nearest-point distance between the two
landed point sets would not do: with errors below the points' spacing every point's
nearest neighbour is its own counterpart, and it equals the boundary error.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.linalg import polar
from scipy.spatial.transform import Rotation

#: Bump when a metric's definition changes: cached benchmark rows of another version are
#: computed afresh (the cache fingerprint holds it).
METRICS_VERSION = 2

#: Jenkinson (1999): RMS deviation over a sphere of this radius (mm), about the brain.
JENKINSON_RADIUS_MM = 80.0


@dataclass(frozen=True)
class Errors:
    """One registration's errors against its reference."""

    translation_mae_mm: float
    rotation_mae_rad: float
    boundary_error_mm: float
    boundary_surface_mm: float
    mean_displacement_mm: float
    jenkinson_rms_mm: float
    translation_mm: tuple[float, float, float]
    rotation_rad: tuple[float, float, float]

    def as_dict(self) -> dict[str, float]:
        out = asdict(self)
        for axis, name in enumerate("xyz"):
            out[f"translation_{name}_mm"] = self.translation_mm[axis]
            out[f"rotation_{name}_rad"] = self.rotation_rad[axis]
        del out["translation_mm"], out["rotation_rad"]
        return out


def closest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation part of a 3x3 linear map (unitary factor of its polar decomposition)."""
    rot, _ = polar(np.asarray(matrix, float)[:3, :3])
    if np.linalg.det(rot) < 0:
        raise ValueError("transform includes a reflection; no rotation to compare")
    return rot


def parameter_errors(estimate: np.ndarray, reference: np.ndarray, centre: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(translation error per axis in mm, rotation error angles in rad) about `centre`."""
    c = np.append(np.asarray(centre, float), 1.0)
    translation = (estimate @ c - reference @ c)[:3]
    delta = closest_rotation(estimate) @ closest_rotation(reference).T
    angles = Rotation.from_matrix(delta).as_euler("xyz")
    return translation, angles


def mean_displacement(estimate: np.ndarray, reference: np.ndarray, points: np.ndarray) -> float:
    """Mean distance (mm) between where the two transforms send each point (N x 3, world)."""
    pts = np.c_[np.asarray(points, float), np.ones(len(points))]
    return float(np.linalg.norm(pts @ (estimate - reference).T[:, :3], axis=1).mean())


def boundary_error(estimate: np.ndarray, reference: np.ndarray, surface: np.ndarray) -> float:
    """Mean distance (mm) between where the two transforms land moving-space surface points.

    `surface` (N x 3) holds world points of the moving image (its brain outline);
    the static->moving maps are inverted to send them into the static image's space.
    """
    return mean_displacement(np.linalg.inv(estimate), np.linalg.inv(reference), surface)


def surface_distance(estimate: np.ndarray, reference: np.ndarray, surface: np.ndarray,
                     normals: np.ndarray) -> float:
    """Mean distance (mm) across the surface between the two landings of its points.

    `normals` (N x 3): unit normals of the surface at `surface`, in moving space; each
    is carried to static space with the reference's linear part (inverse transpose).
    """
    pts = np.c_[np.asarray(surface, float), np.ones(len(surface))]
    to_est, to_ref = np.linalg.inv(estimate), np.linalg.inv(reference)
    step = (pts @ to_est.T)[:, :3] - (pts @ to_ref.T)[:, :3]
    landed = np.asarray(normals, float) @ np.linalg.inv(to_ref[:3, :3])
    landed /= np.linalg.norm(landed, axis=1, keepdims=True)
    return float(np.abs((step * landed).sum(1)).mean())


def jenkinson_rms(estimate: np.ndarray, reference: np.ndarray, centre: np.ndarray,
                  radius: float = JENKINSON_RADIUS_MM) -> float:
    """RMS displacement over a sphere (radius mm, about `centre`) of ref^-1 est, in closed form.

    Jenkinson 1999, eq. for M = T - I: sqrt(R^2/5 tr(A^T A) + (t + A c)^T (t + A c)).
    """
    delta = np.linalg.inv(reference) @ estimate - np.eye(4)
    a, t = delta[:3, :3], delta[:3, 3]
    shift = t + a @ np.asarray(centre, float)
    return float(np.sqrt(radius ** 2 / 5.0 * np.trace(a.T @ a) + shift @ shift))


def errors(estimate: np.ndarray, reference: np.ndarray, *, centre: np.ndarray,
           brain_points: np.ndarray, surface_points: np.ndarray,
           surface_normals: np.ndarray) -> Errors:
    """All metrics of one estimate against one reference.

    `brain_points`: static-space world points of the brain (mean displacement);
    `surface_points`, `surface_normals`: moving-space world points of the brain's surface
    and its unit normals there (boundary errors).
    """
    translation, angles = parameter_errors(estimate, reference, centre)
    return Errors(
        translation_mae_mm=float(np.abs(translation).mean()),
        rotation_mae_rad=float(np.abs(angles).mean()),
        boundary_error_mm=boundary_error(estimate, reference, surface_points),
        boundary_surface_mm=surface_distance(estimate, reference, surface_points,
                                             surface_normals),
        mean_displacement_mm=mean_displacement(estimate, reference, brain_points),
        jenkinson_rms_mm=jenkinson_rms(estimate, reference, centre),
        translation_mm=tuple(float(v) for v in translation),
        rotation_rad=tuple(float(v) for v in angles),
    )
