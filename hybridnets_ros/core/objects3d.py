"""3D positions and box estimates of detected objects from one calibrated camera.

Monocular range comes from the flat-ground assumption: an object stands on the plane z = 0
of the ground frame (REP-103: x forward, y left, z up), and the lowest row of its 2D box is
where it touches that plane. For a car seen from behind or from an angle that row is its
nearest bottom edge, so the recovered point is where the line of sight through the box's
centre column first meets the car's footprint, not the car's centre. Everything here is
vectorised over the N detections of one frame.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .camera import CameraModel

DEFAULT_LENGTH_M = 4.5  # a passenger car
# Typical lengths (m) of road users by detection class name (BDD100K's object classes), for
# box_estimates' length_prior; other classes get DEFAULT_LENGTH_M.
LENGTH_PRIOR_BY_NAME = {"car": DEFAULT_LENGTH_M, "truck": 8.0, "bus": 12.0, "train": 20.0,
                        "motorcycle": 2.2, "bicycle": 1.8, "rider": 1.8, "person": 0.6}

# The bottom-centre pixel and its neighbours one row up/down and one column left/right,
# whose ground points give the covariance.
_CENTRE, _ROW_ABOVE, _ROW_BELOW, _COLUMN_LEFT, _COLUMN_RIGHT = range(5)
_NEIGHBOUR_OFFSETS = np.array([[0.0, 0.0], [0.0, -1.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])


class GroundContacts(NamedTuple):
    """Per detection: ``valid`` [N] bool; ``points`` [N,3] in the ground frame (z = 0);
    ``covariance`` [N,3,3] of those points; ``ranges`` [N] horizontal distance from the
    camera. Rows of invalid detections are NaN."""
    valid: np.ndarray
    points: np.ndarray
    covariance: np.ndarray
    ranges: np.ndarray


class BoxEstimates(NamedTuple):
    """Per detection: ``centres`` [N,3] in the ground frame; ``sizes`` [N,3] as (length,
    width, height) along the box's own x (the viewing direction), y and z; ``yaw`` [N] about
    the ground z axis; ``quaternions`` [N,4] of that yaw as (x, y, z, w)."""
    centres: np.ndarray
    sizes: np.ndarray
    yaw: np.ndarray
    quaternions: np.ndarray


def ground_positions(camera: CameraModel, boxes_xyxy: np.ndarray, rectified: bool,
                     max_range: float = 80.0) -> GroundContacts:
    """Where each box's bottom-centre pixel ((x1 + x2) / 2, y2) looks at the ground plane.

    ``boxes_xyxy`` [N,4] are pixel coordinates of the raw image, undistorted by the
    camera's lens model unless ``rectified`` (the boxes come from a rectified image). A detection is
    invalid when that ray does not meet the ground in front of the camera (the box bottom
    is at or above the horizon) or meets it farther than ``max_range`` metres (horizontal
    distance from the camera).

    A rolled camera tilts an object's bottom edge in the image and the box's bottom row is
    its lower end, so ranges come out short by about (object half-width x sin(roll) /
    camera height): 1 % per degree of roll for a car under a camera 1.5 m high.

    Covariance: one pixel of error in the box bottom moves the point along the line of
    sight, by much more far away than near. The rays through the rows one above and one
    below the bottom meet the ground at two points; half their spread along the horizontal
    viewing direction d is the 1-sigma range error (capped at ``max_range`` when the row
    above misses the ground). Likewise half the spread of the columns one left and one
    right, across d, is the lateral sigma. The x/y block is
    ``sigma_range**2 d d^T + sigma_lateral**2 e e^T`` with e perpendicular to d; z is fixed
    by the flat-ground assumption and its variance is 0 (ground slope is not modelled).
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    bottom_centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=-1)
    pixels = bottom_centre[:, None, :] + _NEIGHBOUR_OFFSETS  # [N,5,2]
    # [N,5,3], NaN: misses the ground (or no ray of the lens reaches the pixel)
    points = camera.intersect_ground(camera.pixel_rays(pixels, rectified))
    horizontal = points[..., :2] - camera.t_ground_optical[:2]

    ranges = np.linalg.norm(horizontal[:, _CENTRE], axis=-1)
    valid = np.isfinite(ranges) & (ranges <= max_range)
    ranges = np.where(valid, ranges, np.nan)

    with np.errstate(invalid="ignore", divide="ignore"):
        along = horizontal[:, _CENTRE] / ranges[:, None]       # unit viewing direction d
    across = np.stack([-along[:, 1], along[:, 0]], axis=-1)     # e, d turned left
    range_spread = ((horizontal[:, _ROW_ABOVE] - horizontal[:, _ROW_BELOW]) * along).sum(-1)
    sigma_range = np.minimum(np.where(np.isfinite(range_spread), np.abs(range_spread) / 2, np.inf),
                             max_range)
    lateral_spread = ((horizontal[:, _COLUMN_RIGHT] - horizontal[:, _COLUMN_LEFT]) * across).sum(-1)
    sigma_lateral = np.abs(lateral_spread) / 2
    covariance = np.zeros((len(boxes), 3, 3))
    covariance[:, :2, :2] = (np.einsum("n,ni,nj->nij", sigma_range ** 2, along, along)
                             + np.einsum("n,ni,nj->nij", sigma_lateral ** 2, across, across))
    covariance[~valid] = np.nan
    contact = np.where(valid[:, None], points[:, _CENTRE], np.nan)
    return GroundContacts(valid, contact, covariance, ranges)


def box_estimates(camera: CameraModel, boxes_xyxy: np.ndarray, contact_points: np.ndarray,
                  class_ids: np.ndarray,
                  length_prior: Mapping[int, float] | Sequence[float] | None = None,
                  *, rectified: bool, default_length: float = DEFAULT_LENGTH_M) -> BoxEstimates:
    """A rough 3D box per detection from its 2D box and ground contact point.

    This is an estimate, not a measurement: one view gives the object's apparent width and
    height but not its length or heading. Width = pixel width x depth / fx and height =
    pixel height x depth / fy, with depth the contact point's distance along the optical
    axis (what sets a pinhole image's scale). Both include whatever side or top of the
    object is visible, so they overestimate for objects seen obliquely. The length comes
    from ``length_prior`` (class id -> metres, as a mapping or a sequence indexed by class
    id), ``default_length`` for classes it does not list. The box is assumed aligned with
    the horizontal line of sight: yaw is that direction's, and the centre lies half a length
    beyond the contact point along it and half a height above the ground.

    ``boxes_xyxy`` are undistorted by the camera's lens model unless ``rectified``, as in
    :func:`ground_positions`; ``contact_points`` are its points (NaN rows give NaN boxes).
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    contact = np.asarray(contact_points, np.float64).reshape(-1, 3)
    class_ids = np.asarray(class_ids).reshape(-1)
    x1, y1, x2, y2 = boxes.T
    x_mid, y_mid = (x1 + x2) / 2, (y1 + y2) / 2
    # Edge midpoints: left, right, top, bottom.
    edges = np.stack([np.stack([x1, y_mid], -1), np.stack([x2, y_mid], -1),
                      np.stack([x_mid, y1], -1), np.stack([x_mid, y2], -1)], axis=1)
    if not rectified:
        edges = camera.undistort_pixels(edges)
    pixel_width = edges[:, 1, 0] - edges[:, 0, 0]
    pixel_height = edges[:, 3, 1] - edges[:, 2, 1]

    optical_axis = camera.R_ground_optical[:, 2]
    depth = (contact - camera.t_ground_optical) @ optical_axis
    width = pixel_width * depth / camera.K[0, 0]
    height = pixel_height * depth / camera.K[1, 1]
    length = class_lengths(class_ids, length_prior, default_length)

    horizontal = contact[:, :2] - camera.t_ground_optical[:2]
    yaw = np.arctan2(horizontal[:, 1], horizontal[:, 0])
    along = np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)
    centres = np.column_stack([contact[:, :2] + along * (length / 2)[:, None], height / 2])
    quaternions = np.column_stack([np.zeros_like(yaw), np.zeros_like(yaw),
                                   np.sin(yaw / 2), np.cos(yaw / 2)])
    return BoxEstimates(centres, np.column_stack([length, width, height]), yaw, quaternions)


def class_lengths(class_ids: np.ndarray, length_prior: Mapping[int, float] | Sequence[float] | None,
                  default_length: float = DEFAULT_LENGTH_M) -> np.ndarray:
    """Prior object length (metres) per class id; ``default_length`` where none is given."""
    class_ids = np.asarray(class_ids).reshape(-1)
    if length_prior is None:
        length_prior = {}
    elif not isinstance(length_prior, Mapping):
        length_prior = dict(enumerate(length_prior))
    lengths = np.full(len(class_ids), float(default_length))
    for class_id, length in length_prior.items():
        lengths[class_ids == class_id] = length
    return lengths
