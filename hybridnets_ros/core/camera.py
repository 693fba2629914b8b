"""Calibrated camera with its pose on the vehicle: projection to and from the ground plane.

Frames: the ground frame (e.g. base_footprint) and the camera *body* frame follow REP-103
(x forward, y left, z up). ``pose`` = (x, y, z, roll, pitch, yaw) of the body frame in the
ground frame, angles in radians applied as R = Rz(yaw) Ry(pitch) Rx(roll); positive pitch
looks down. The optical frame (z forward, x right, y down) follows by the fixed rotation
below, as in REP-103's ``_optical`` frames.

Lens models are ROS's (sensor_msgs/distortion_models.hpp) as OpenCV computes them:
``plumb_bob`` and ``rational_polynomial`` are OpenCV's pinhole model (cv2.projectPoints,
D's length picks the terms), ``equidistant`` its fisheye model (cv2.fisheye, 4
coefficients). A calibration is checked once, when the model is built: K's focal lengths,
D's size, and that the lens mapping neither folds (turns back) inside the image nor
stretches its edge beyond any lens (:class:`CalibrationError` names the field at fault).
Beyond the image the polynomial may fold: points past its first fold are out of view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

# Lengths of D that OpenCV's pinhole distortion models accept (any other raises in
# projectPoints, and a huge one makes it allocate without bound).
DISTORTION_SIZES = (4, 5, 8, 12, 14)
PINHOLE_MODELS = ("plumb_bob", "rational_polynomial")
FISHEYE = "equidistant"
DISTORTION_MODELS = (*PINHOLE_MODELS, FISHEYE)
# A focal length under a pixel puts the edge of any real image beyond 89 deg off-axis.
MIN_FOCAL_PX = 1.0
# How much farther out than K alone the distortion may put the image's corner (the ratio
# of distorted to undistorted radius there): real lenses stay within tens of per cent;
# beyond this D and K do not describe one lens (D = [1e6, 0, 0, 0, 0] makes it 86).
MAX_EDGE_STRETCH = 10.0
# Samples of the off-axis angle in [0, 90 deg) on which the radial mapping is checked and
# the fisheye model inverted (0.02 deg apart).
_ANGLES = np.linspace(0.0, np.pi / 2, 4096, endpoint=False)
# OpenCV's pinhole undistortion is a fixed-point iteration: its default 5 steps leave
# pixels off by more than 2 px at the corners of a strongly distorted image; this stops
# each pixel within 0.01 px instead (at about the same cost over a whole image).
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 0.01)  # px
_ROUND_TRIP_PX = 0.5  # how far an undistorted pixel may project from where it was


class CalibrationError(ValueError):
    """A calibration no camera can have; ``field`` names what is at fault as CameraInfo
    calls it: k, d, distortion_model, width/height."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# Columns: the optical x, y, z axes expressed in the body frame.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                              [-1.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0]])


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def rotation_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a unit quaternion (as in geometry_msgs/Quaternion)."""
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def quaternion_from_rotation(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation, w >= 0 (the inverse of rotation_from_quaternion)."""
    R = np.asarray(R, np.float64)
    # Shepperd's method: divide by the largest of the four candidate components.
    trace = np.trace(R)
    candidates = (trace, R[0, 0], R[1, 1], R[2, 2])
    k = int(np.argmax(candidates))
    if k == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = ((R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4)
    else:
        i, j, m = (k - 1, k % 3, (k + 1) % 3)
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[m, m])
        q = [0.0, 0.0, 0.0, (R[m, j] - R[j, m]) / s]
        q[i], q[j], q[m] = s / 4, (R[j, i] + R[i, j]) / s, (R[m, i] + R[i, m]) / s
    q = np.asarray(q, np.float64)
    q = -q if q[3] < 0 else q
    return tuple(float(v) for v in q / np.linalg.norm(q))


def optical_transform(pose) -> tuple[np.ndarray, np.ndarray]:
    """(R_ground_optical, t) of the optical frame of a camera whose body frame has ``pose``
    = (x, y, z, roll, pitch, yaw) in the ground frame."""
    x, y, z, roll, pitch, yaw = (float(v) for v in pose)
    return rotation_rpy(roll, pitch, yaw) @ BODY_FROM_OPTICAL, np.array([x, y, z])


def pose_problem(R_ground_optical, t_ground_optical) -> str | None:
    """Why no camera, whatever its lens, can be at this pose over the ground plane z = 0:
    below (or on) it, or upside down; None when it is plausible."""
    z = float(t_ground_optical[2])
    if not z > 0:
        return (f"the camera is {'on' if z == 0 else 'below'} the ground plane (z = {z:g} m; "
                "it must be above it)")
    # The image's downward direction (optical y) in the ground frame: up means upside down.
    down_z = float(np.asarray(R_ground_optical)[2, 1])
    if down_z > 1e-6:
        return (f"the camera is upside down (the image's downward direction points "
                f"{np.degrees(np.arcsin(min(down_z, 1.0))):.0f} deg above the horizon; roll "
                "beyond +-90 deg)")
    return None


@dataclass(frozen=True)
class CameraModel:
    K: np.ndarray                   # 3x3 intrinsics [fx 0 cx; 0 fy cy; 0 0 1]
    width: int
    height: int
    D: np.ndarray | None            # distortion coefficients; None: a pinhole without any
    R_ground_optical: np.ndarray    # optical -> ground rotation
    t_ground_optical: np.ndarray    # camera centre in the ground frame
    distortion_model: str = "plumb_bob"  # or rational_polynomial, equidistant
    # tan of the largest off-axis angle up to which the lens maps rays one-to-one (where its
    # radial mapping folds, else about 90 deg): the lens sees nothing beyond it.
    max_tan: float = np.inf
    # equidistant: (theta, theta_d) sampled up to max_tan, to invert the lens's mapping
    fisheye_table: tuple[np.ndarray, np.ndarray] | None = None
    # pinhole models: the distorted radius (on the plane z = 1) within which OpenCV's
    # fixed-point undistortion surely converges: its step contracts the error at least by
    # half; pixels beyond it are checked by projecting them back
    gentle_radius: float = np.inf

    @classmethod
    def from_pose(cls, K, width: int, height: int, pose, D=None,
                  distortion_model: str = "plumb_bob") -> "CameraModel":
        """``pose`` = (x, y, z, roll, pitch, yaw) of the camera body frame in the ground frame."""
        return cls.from_transform(K, width, height, *optical_transform(pose), D=D,
                                  distortion_model=distortion_model)

    @classmethod
    def from_transform(cls, K, width: int, height: int, R_ground_optical, t_ground_optical,
                       D=None, distortion_model: str = "plumb_bob") -> "CameraModel":
        """Raises :class:`CalibrationError` for a calibration no camera can have. An empty
        ``distortion_model`` (simple drivers leave it so) is plumb_bob, ROS's default."""
        K = _intrinsics(K)
        if width < 1 or height < 1:
            raise CalibrationError("width/height", f"invalid image size {width}x{height}")
        model, D = _distortion(distortion_model or "plumb_bob", D)
        lens = _lens_range(model, D, K, int(width), int(height))
        if D is not None and model != FISHEYE:  # beyond the radial fold is out of view
            _check_pinhole_folds(D, K, int(width), int(height),
                                 min(lens.reach * 1.05, lens.max_tan))
        return cls(K, int(width), int(height), D, np.asarray(R_ground_optical, np.float64),
                   np.asarray(t_ground_optical, np.float64), model, lens.max_tan, lens.table,
                   lens.gentle_radius)

    @staticmethod
    def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    @property
    def fisheye(self) -> bool:
        return self.distortion_model == FISHEYE

    def project(self, points_ground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground-frame points [N,3] -> pixel coordinates [N,2] and a mask [N] of those the
        lens sees: in front of the camera and within its one-to-one field (beyond it a
        distortion polynomial can turn back into the image: ghosts)."""
        p_opt = (points_ground - self.t_ground_optical) @ self.R_ground_optical  # R^T (p - t)
        in_front = p_opt[:, 2] > 1e-6
        xy = p_opt[:, :2] / np.where(in_front, p_opt[:, 2], 1.0)[:, None]
        in_view = in_front & (np.hypot(xy[:, 0], xy[:, 1]) <= self.max_tan)
        if self.D is None:
            return xy * self.K[[0, 1], [0, 1]] + self.K[:2, 2], in_view
        on_plane = np.column_stack([xy, np.ones(len(xy))]).reshape(-1, 1, 3)
        project = cv2.fisheye.projectPoints if self.fisheye else cv2.projectPoints
        uv, _ = project(on_plane, np.zeros(3), np.zeros(3), self.K, self.D)
        return uv.reshape(-1, 2), in_view

    def normalized(self, uv: np.ndarray) -> np.ndarray:
        """Pixel coordinates [..., 2] of the image -> (x/z, y/z) [..., 2] of the rays through
        them, the lens's distortion undone; NaN where no ray reaches the pixel (a fisheye's
        corners beyond 90 deg)."""
        uv = np.asarray(uv, np.float64)
        focal, centre = self.K[[0, 1], [0, 1]], self.K[:2, 2]
        if self.D is None or uv.size == 0:
            return (uv - centre) / focal
        if self.fisheye:
            # By the checked monotonic table: cv2.fisheye.undistortPoints loses accuracy
            # beyond about 85 deg and returns finite values for pixels no ray reaches.
            distorted = (uv - centre) / focal
            theta_d = np.hypot(distorted[..., 0], distorted[..., 1])
            theta = np.interp(theta_d, self.fisheye_table[1], self.fisheye_table[0],
                              right=np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(theta_d > 0, np.tan(theta) / theta_d, 1.0)
            return distorted * scale[..., None]
        flat = uv.reshape(-1, 2)
        xy = (cv2.undistortImagePoints(flat.reshape(-1, 1, 2), self.K, self.D, None,
                                       _UNDISTORT_CRITERIA).reshape(-1, 2) - centre) / focal
        # Where the mapping flattens out (a wide lens whose calibration nearly folds at the
        # image's corners) OpenCV's iteration can stall: those pixels are projected back
        # (all of them would cost seconds for a whole image) and one that misses gets no ray.
        far = np.flatnonzero(~(np.hypot(*((flat - centre) / focal).T) <= self.gentle_radius))
        if far.size:
            back, _ = cv2.projectPoints(np.column_stack([xy[far], np.ones(far.size)]),
                                        np.zeros(3), np.zeros(3), self.K, self.D)
            missed = ~(np.linalg.norm(back.reshape(-1, 2) - flat[far], axis=1) <= _ROUND_TRIP_PX)
            xy[far[missed]] = np.nan
        return xy.reshape(uv.shape)

    def undistort_pixels(self, uv: np.ndarray) -> np.ndarray:
        """Pixel coordinates [..., 2] of the image -> where they lie in the rectified image
        of the same K (NaN where no ray reaches them); unchanged without distortion."""
        uv = np.asarray(uv, np.float64)
        if self.D is None:
            return uv
        return self.normalized(uv) * self.K[[0, 1], [0, 1]] + self.K[:2, 2]

    def pixel_rays(self, uv: np.ndarray | None = None, rectified: bool = False) -> np.ndarray:
        """Ground-frame ray directions through pixel coordinates ``uv`` [..., 2] of the
        image (taken as those of the rectified image of K when ``rectified``), by default
        through every pixel centre as [H, W, 3]; NaN where no ray reaches the pixel."""
        if uv is None:
            uv = np.stack(np.meshgrid(np.arange(self.width) + 0.0, np.arange(self.height) + 0.0), -1)
        if rectified:
            xy = (np.asarray(uv, np.float64) - self.K[:2, 2]) / self.K[[0, 1], [0, 1]]
        else:
            xy = self.normalized(uv)
        rays_opt = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
        return rays_opt @ self.R_ground_optical.T

    def pose_problem(self) -> str | None:
        """Why this camera cannot see the ground plane as posed (:func:`pose_problem`, or
        no pixel's ray reaching the ground); None when it can. Without distortion the
        lowest ray is one of the image corners' (a ray's height component is linear in the
        pixel position); with it, the lowest of a grid of pixels over the image."""
        if problem := pose_problem(self.R_ground_optical, self.t_ground_optical):
            return problem
        if self.D is None:
            samples = np.array([[0.0, 0.0], [self.width, 0.0], [0.0, self.height],
                                [self.width, self.height]])
        else:
            samples = np.stack(np.meshgrid(np.linspace(0, self.width, 17),
                                           np.linspace(0, self.height, 17)), -1).reshape(-1, 2)
        rays = self.pixel_rays(samples)
        lowest = float(np.nanmin(rays[:, 2] / np.linalg.norm(rays, axis=1)))
        if lowest > -1e-9:
            return (f"no part of the image sees the ground (its lowest ray points "
                    f"{np.degrees(np.arcsin(min(lowest, 1.0))):.0f} deg above the horizon; "
                    "positive pitch looks down)")
        return None

    def intersect_ground(self, rays: np.ndarray) -> np.ndarray:
        """Where ground-frame rays [..., 3] from the camera centre meet z = 0 (NaN if never)."""
        origin = self.t_ground_optical
        down = rays[..., 2] < -1e-12
        dist = np.where(down, -origin[2] / np.where(down, rays[..., 2], -1.0), np.nan)
        return origin + dist[..., None] * rays


def _intrinsics(K) -> np.ndarray:
    """[fx 0 cx; 0 fy cy; 0 0 1] of a CameraInfo-style K (skew and the last row are
    ignored, as OpenCV's pinhole model does); raises CalibrationError."""
    K = np.asarray(K, np.float64).ravel()
    if K.size != 9:
        raise CalibrationError("k", f"K needs 9 values, got {K.size}")
    if not np.all(np.isfinite(K)):
        raise CalibrationError("k", f"K must be finite: {K.tolist()}")
    K = K.reshape(3, 3)
    for name, focal in (("fx", K[0, 0]), ("fy", K[1, 1])):
        if not focal >= MIN_FOCAL_PX:
            raise CalibrationError("k", f"{name} must be a positive finite focal length of at "
                                        f"least {MIN_FOCAL_PX:g} pixel (got {focal:g})")
    return CameraModel.intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2])


def _distortion(model: str, D) -> tuple[str, np.ndarray | None]:
    """(model, D) checked: D None for a pinhole model without distortion."""
    if model not in DISTORTION_MODELS:
        raise CalibrationError("distortion_model", f"'{model}' is not supported "
                                                   f"({', '.join(DISTORTION_MODELS)})")
    D = np.zeros(0) if D is None else np.asarray(D, np.float64).ravel()
    if model == FISHEYE:
        if D.size != 4:
            raise CalibrationError("d", f"{D.size} distortion coefficients: equidistant takes 4 "
                                        "(k1, k2, k3, k4 of OpenCV's fisheye model)")
    elif D.size == 0:
        return model, None
    elif D.size not in DISTORTION_SIZES:
        raise CalibrationError("d", f"{D.size} distortion coefficients: OpenCV's models take "
                                    f"{', '.join(map(str, DISTORTION_SIZES))} (plumb_bob 5, "
                                    "rational_polynomial 8)")
    if not np.all(np.isfinite(D)):
        raise CalibrationError("d", f"invalid distortion coefficients: {D.tolist()}")
    if model != FISHEYE and not np.any(D):
        return model, None
    return model, D


_COEFFICIENT_NAMES = {FISHEYE: ("k1", "k2", "k3", "k4")}
_PINHOLE_NAMES = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6", "s1", "s2", "s3", "s4",
                  "tau_x", "tau_y")


def _coefficients(model: str, D: np.ndarray) -> str:
    """The non-zero coefficients by name, for a message: 'k1=1e+06, p2=0.1'."""
    names = _COEFFICIENT_NAMES.get(model, _PINHOLE_NAMES)
    return ", ".join(f"{name}={value:g}" for name, value in zip(names, D) if value) or "all 0"


def _radial(model: str, D: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The lens's radial mapping, OpenCV's formulas without tangential terms: for the
    pinhole models the distorted radius of a ray at radius ``x`` = tan(off-axis angle) on
    the plane z = 1; for equidistant the distorted angle theta_d of a ray at ``x`` = theta."""
    s = x * x
    if model == FISHEYE:
        k1, k2, k3, k4 = D
        return x * (1 + s * (k1 + s * (k2 + s * (k3 + s * k4))))
    k = np.zeros(8)
    k[:min(D.size, 8)] = D[:8]
    k1, k2, _, _, k3, k4, k5, k6 = k
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return x * (1 + s * (k1 + s * (k2 + s * k3))) / (1 + s * (k4 + s * (k5 + s * k6)))


class _LensRange(NamedTuple):
    max_tan: float                                     # CameraModel's fields
    table: tuple[np.ndarray, np.ndarray] | None
    gentle_radius: float
    reach: float  # undistorted radius (pinhole) or angle (fisheye) of the farthest corner


def _lens_range(model: str, D: np.ndarray | None, K: np.ndarray, width: int,
                height: int) -> _LensRange:
    """The reach of a lens's radial mapping over the image (:class:`_LensRange`). Raises
    CalibrationError when its radial mapping is not strictly increasing over the radii the
    image covers (it folds: pixels there would see two directions, others none) or puts
    the image's corner more than MAX_EDGE_STRETCH times farther out than K alone."""
    corners = np.array([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]])
    edge = float(np.max(np.hypot((corners[:, 0] - K[0, 2]) / K[0, 0],
                                 (corners[:, 1] - K[1, 2]) / K[1, 1])))
    if D is None:
        return _LensRange(np.inf, None, np.inf, edge)
    fisheye = model == FISHEYE
    x = _ANGLES if fisheye else np.tan(_ANGLES)
    mapped = _radial(model, D, x)
    rising = np.diff(mapped) > 0  # False at NaN too
    end = int(np.argmin(rising)) if not rising.all() else len(rising)  # mapped[:end+1] rises
    name = "theta" if fisheye else "r"
    if mapped[end] < edge:
        if end < len(rising):
            raise CalibrationError("d", (
                f"the radial distortion folds the image at {name} = {x[end]:.3g} "
                f"({np.degrees(_ANGLES[end]):.2g} deg off the optical axis; "
                f"{_coefficients(model, D)}): the distorted radius peaks at {mapped[end]:.3g} "
                f"where the image reaches {edge:.3g}, so pixels near its edge would see two "
                "directions or none"))
        if not fisheye:  # a fisheye's corners may lie beyond 90 deg: they see nothing
            raise CalibrationError("d", (
                f"the radial distortion leaves the image's corner beyond 90 deg off the optical "
                f"axis ({_coefficients(model, D)}), which a pinhole lens cannot see"))
        reach = float(x[end])
    else:
        reach = float(np.interp(edge, mapped[:end + 1], x[:end + 1]))
        if edge / reach > MAX_EDGE_STRETCH:
            angle = reach if fisheye else np.arctan(reach)
            raise CalibrationError("d", (
                f"the radial distortion puts the image's corner {edge / reach:.3g} times "
                f"farther out than K alone ({_coefficients(model, D)}): the corner pixel would "
                f"look {np.degrees(angle):.2g} deg off the optical axis; no lens is that far "
                f"from its model (at most {MAX_EDGE_STRETCH:g} times)"))
    if fisheye:
        return _LensRange(float(np.tan(_ANGLES[end])), (_ANGLES[:end + 1], mapped[:end + 1]),
                          np.inf, reach)
    # OpenCV's step r <- r_d / f(r), with f = r_d / r the radial factor, changes the error
    # by -r f'/f = 1 - (dr_d/dr) / f: gentle while that stays within +-0.5.
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.abs(1 - np.gradient(mapped[:end + 1], x[:end + 1]) * x[:end + 1]
                      / mapped[:end + 1])
    step[0] = 0.0
    steep = np.flatnonzero(~(step <= 0.5))
    gentle = float(mapped[steep[0] - 1]) if steep.size else float(mapped[end])
    return _LensRange(float(np.tan(_ANGLES[end])), None, gentle, reach)


def _check_pinhole_folds(D: np.ndarray, K: np.ndarray, width: int, height: int,
                         radius: float) -> None:
    """Raises CalibrationError where OpenCV's full pinhole mapping (tangential, thin-prism
    and tilt terms too, which the radial check leaves out) folds inside the image: where
    its Jacobian's determinant is not positive, on a grid of rays within ``radius`` (on
    the plane z = 1) that covers the image."""
    side = np.linspace(-radius, radius, 41)
    xy = np.stack(np.meshgrid(side, side), -1).reshape(-1, 2)
    xy = xy[np.hypot(xy[:, 0], xy[:, 1]) <= radius]
    uv, jacobian = cv2.projectPoints(np.column_stack([xy, np.ones(len(xy))]), np.zeros(3),
                                     np.zeros(3), K, D)
    uv = uv.reshape(-1, 2)
    d_uv = jacobian[:, 3:5].reshape(-1, 2, 2)  # d(u, v)/d(x, y): a shift of the point
    determinant = d_uv[:, 0, 0] * d_uv[:, 1, 1] - d_uv[:, 0, 1] * d_uv[:, 1, 0]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= width) & (uv[:, 1] >= 0) & (uv[:, 1] <= height)
    folded = np.flatnonzero(inside & ~(determinant > 0))
    if folded.size:
        u, v = uv[folded[np.argmin(np.hypot(xy[folded, 0], xy[folded, 1]))]]
        raise CalibrationError("d", (
            f"the distortion folds the image near pixel ({u:.0f}, {v:.0f}) "
            f"({_coefficients('plumb_bob', D)}): pixels there would see two directions or "
            "none"))
