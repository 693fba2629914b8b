"""Pinhole camera with its pose on the vehicle: projection to and from the ground plane.

Frames: the ground frame (e.g. base_footprint) and the camera *body* frame follow REP-103
(x forward, y left, z up). ``pose`` = (x, y, z, roll, pitch, yaw) of the body frame in the
ground frame, angles in radians applied as R = Rz(yaw) Ry(pitch) Rx(roll); positive pitch
looks down. The optical frame (z forward, x right, y down) follows by the fixed rotation
below, as in REP-103's ``_optical`` frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Lengths of D that OpenCV's pinhole distortion models accept (any other raises in
# projectPoints, and a huge one makes it allocate without bound).
DISTORTION_SIZES = (4, 5, 8, 12, 14)

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
    K: np.ndarray                   # 3x3 intrinsics
    width: int
    height: int
    D: np.ndarray | None            # plumb_bob / rational distortion; None when rectified
    R_ground_optical: np.ndarray    # optical -> ground rotation
    t_ground_optical: np.ndarray    # camera centre in the ground frame

    @classmethod
    def from_pose(cls, K, width: int, height: int, pose, D=None) -> "CameraModel":
        """``pose`` = (x, y, z, roll, pitch, yaw) of the camera body frame in the ground frame."""
        return cls.from_transform(K, width, height, *optical_transform(pose), D=D)

    @classmethod
    def from_transform(cls, K, width: int, height: int, R_ground_optical, t_ground_optical,
                       D=None) -> "CameraModel":
        K = np.asarray(K, np.float64).reshape(3, 3)
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"invalid camera matrix K (need finite values, fx, fy > 0): {K.ravel().tolist()}")
        if width < 1 or height < 1:
            raise ValueError(f"invalid image size {width}x{height}")
        if D is not None:
            D = np.asarray(D, np.float64).ravel()
            if D.size not in DISTORTION_SIZES:
                raise ValueError(f"{D.size} distortion coefficients: OpenCV's models take "
                                 f"{', '.join(map(str, DISTORTION_SIZES))} (plumb_bob 5, "
                                 "rational_polynomial 8)")
            if not np.all(np.isfinite(D)):
                raise ValueError(f"invalid distortion coefficients: {D.tolist()}")
            if not np.any(D):
                D = None
        return cls(K, int(width), int(height), D, np.asarray(R_ground_optical, np.float64),
                   np.asarray(t_ground_optical, np.float64))

    @staticmethod
    def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def project(self, points_ground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground-frame points [N,3] -> pixel coordinates [N,2] and an in-front mask [N]."""
        p_opt = (points_ground - self.t_ground_optical) @ self.R_ground_optical  # R^T (p - t)
        in_front = p_opt[:, 2] > 1e-6
        if self.D is None:
            z = np.where(in_front, p_opt[:, 2], 1.0)
            uv = (p_opt[:, :2] / z[:, None]) * self.K[[0, 1], [0, 1]] + self.K[:2, 2]
        else:
            uv, _ = cv2.projectPoints(p_opt.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                      self.K, self.D)
            uv = uv.reshape(-1, 2)
        return uv, in_front

    def pixel_rays(self, uv: np.ndarray | None = None) -> np.ndarray:
        """Ground-frame ray directions through pixel coordinates ``uv`` [..., 2], by default
        through every pixel centre as [H, W, 3] (undistorted: a rectified image)."""
        if uv is None:
            uv = np.stack(np.meshgrid(np.arange(self.width) + 0.0, np.arange(self.height) + 0.0), -1)
        x = (uv[..., 0] - self.K[0, 2]) / self.K[0, 0]
        y = (uv[..., 1] - self.K[1, 2]) / self.K[1, 1]
        rays_opt = np.stack([x, y, np.ones_like(x)], axis=-1)
        return rays_opt @ self.R_ground_optical.T

    def pose_problem(self) -> str | None:
        """Why this camera cannot see the ground plane as posed (:func:`pose_problem`, or
        no pixel's ray reaching the ground); None when it can. The lowest ray is one of
        the image corners' (a ray's height component is linear in the pixel position)."""
        if problem := pose_problem(self.R_ground_optical, self.t_ground_optical):
            return problem
        corners = np.array([[0.0, 0.0], [self.width, 0.0], [0.0, self.height],
                            [self.width, self.height]])
        rays = self.pixel_rays(corners)
        lowest = float(np.min(rays[:, 2] / np.linalg.norm(rays, axis=1)))
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
