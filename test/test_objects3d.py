"""3D positions, box estimates and tracking of cars seen by one calibrated camera.

Ground truth comes from geometry, not from the code under test: each car is a box on the
ground, its 2D box is the extent of its projected edges (sampled densely, so that a
distorted image's curved edges count), and the true contact point is where the line of
sight at the middle of the car's bearing span first meets the car's footprint. That is the
ground point a 2D box's bottom-centre stands for: the bottom row is the car's nearest
bottom edge, the centre column the middle of its visible extent, side included. (The car's
centre, or the centre of its rear face, would be wrong by half a length or by the visible
side's half-width, up to 4 % at 8 m ahead and 5 m aside.)

Run as a script, it prints the range errors and the cost per frame.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.objects3d import box_estimates, class_lengths, ground_positions
from hybridnets_ros.core.nms import box_iou
from hybridnets_ros.core.tracking import Tracker
from hybridnets_ros.core.synthetic import VEHICLES, SyntheticRoad, default_camera

CAR = (4.5, 1.8, 1.5)  # length, width, height (m)
RANGE_TOLERANCE = 0.02
DISTORTION = np.array([-0.3, 0.1, 0.0, 0.0, 0.0])  # strong barrel: ignoring it costs > 2 %
ROLL, PITCH = np.radians(1.0), np.radians(3.0)

CAMERA_POSES = {  # name: (pose, D)
    "level": ((0.0, 0.0, 1.5, 0.0, 0.0, 0.0), None),
    "pitched-down-rolled-left": ((0.0, 0.0, 1.5, ROLL, PITCH, 0.0), None),
    "pitched-up-rolled-right": ((0.0, 0.0, 1.5, -ROLL, -np.radians(2.0), 0.0), None),
    "offset-distorted": ((1.2, 0.3, 1.5, ROLL, PITCH, 0.0), DISTORTION),
}
# Near-face distances ahead and lateral offsets of the cars in the range test.
NEAR_FACE_X = (8.0, 10.0, 15.0, 20.0, 30.0, 40.0)
LATERAL_Y = (-5.0, -2.5, 0.0, 2.5, 5.0)


def make_camera(name: str) -> CameraModel:
    pose, D = CAMERA_POSES[name]
    base = default_camera()
    return CameraModel.from_pose(base.K, base.width, base.height, pose, D)


def box_corners(centre_xy, size=CAR) -> np.ndarray:
    (x, y), (length, width, height) = centre_xy, size
    return np.array([[x + dx, y + dy, z] for dx in (-length / 2, length / 2)
                     for dy in (-width / 2, width / 2) for z in (0.0, height)])


def image_box(camera: CameraModel, centre_xy, size=CAR, samples: int = 64) -> np.ndarray:
    """The 2D box (x1, y1, x2, y2) of a car as a detector would see it: the extent of its
    twelve edges, sampled so that edges bent by distortion count."""
    corners = box_corners(centre_xy, size)
    pairs = [(i, j) for i in range(8) for j in range(i + 1, 8)
             if np.count_nonzero(corners[i] != corners[j]) == 1]
    t = np.linspace(0.0, 1.0, samples)[:, None]
    points = np.concatenate([corners[i] + t * (corners[j] - corners[i]) for i, j in pairs])
    uv, in_front = camera.project(points)
    assert in_front.all()
    return np.concatenate([uv.min(0), uv.max(0)])


def line_of_sight_contact(camera: CameraModel, centre_xy, size=CAR) -> np.ndarray:
    """True ground point a box's bottom-centre stands for: where the horizontal ray at the
    middle of the car's bearing span (seen from the camera) enters its footprint."""
    (x, y), (length, width, _) = centre_xy, size
    origin = camera.t_ground_optical[:2]
    low = np.array([x - length / 2, y - width / 2]) - origin
    high = np.array([x + length / 2, y + width / 2]) - origin
    bearings = np.arctan2([low[1], high[1], low[1], high[1]], [low[0], low[0], high[0], high[0]])
    bearing = (bearings.min() + bearings.max()) / 2
    direction = np.array([np.cos(bearing), np.sin(bearing)])
    with np.errstate(divide="ignore"):
        entry = np.minimum(low / direction, high / direction).max()  # slab method
    return np.append(origin + entry * direction, 0.0)


def car_grid(camera: CameraModel) -> list[tuple[float, float]]:
    """Car centres whose near faces are NEAR_FACE_X ahead of and LATERAL_Y aside the camera."""
    x0, y0 = camera.t_ground_optical[:2]
    return [(x0 + x + CAR[0] / 2, y0 + y) for x in NEAR_FACE_X for y in LATERAL_Y]


def range_errors(camera_for_estimate: CameraModel, camera_for_truth: CameraModel, cars,
                 rectified: bool = False) -> np.ndarray:
    """Relative horizontal-range error of every car's recovered contact point."""
    boxes = np.array([image_box(camera_for_truth, car) for car in cars])
    contacts = ground_positions(camera_for_estimate, boxes, rectified=rectified)
    truth = np.array([line_of_sight_contact(camera_for_truth, car) for car in cars])
    true_range = np.linalg.norm(truth[:, :2] - camera_for_truth.t_ground_optical[:2], axis=1)
    return (contacts.ranges - true_range) / true_range


# --- 3D positions ---------------------------------------------------------------------------

@pytest.mark.parametrize("camera_name", list(CAMERA_POSES))
def test_range_within_two_percent(camera_name):
    camera = make_camera(camera_name)
    errors = range_errors(camera, camera, car_grid(camera))
    assert np.isfinite(errors).all()
    assert np.abs(errors).max() < RANGE_TOLERANCE, np.abs(errors).max()


def test_lateral_position_and_validity():
    camera = make_camera("offset-distorted")
    cars = car_grid(camera)
    boxes = np.array([image_box(camera, car) for car in cars])
    contacts = ground_positions(camera, boxes, rectified=False)
    truth = np.array([line_of_sight_contact(camera, car) for car in cars])
    assert contacts.valid.all()
    np.testing.assert_allclose(contacts.points[:, 2], 0.0, atol=1e-9)
    # The same 2 % of range, across the line of sight too.
    miss = np.linalg.norm(contacts.points[:, :2] - truth[:, :2], axis=1)
    assert np.all(miss < RANGE_TOLERANCE * contacts.ranges)


@pytest.mark.parametrize("wrong", ["pitch sign", "roll sign", "distortion ignored"])
def test_wrong_geometry_fails_the_range_test(wrong):
    """The range test is sharp enough: a sign error in pitch or roll, or boxes of a
    distorted image taken as rectified, breaks the 2 % bound."""
    truth_camera = make_camera("offset-distorted")
    pose, D = CAMERA_POSES["offset-distorted"]
    x, y, z, roll, pitch, yaw = pose
    K, w, h = truth_camera.K, truth_camera.width, truth_camera.height
    wrong_camera = {
        "pitch sign": CameraModel.from_pose(K, w, h, (x, y, z, roll, -pitch, yaw), D),
        "roll sign": CameraModel.from_pose(K, w, h, (x, y, z, -roll, pitch, yaw), D),
        "distortion ignored": truth_camera,
    }[wrong]
    errors = range_errors(wrong_camera, truth_camera, car_grid(truth_camera),
                          rectified=(wrong == "distortion ignored"))
    assert np.nanmax(np.abs(errors)) > RANGE_TOLERANCE


@pytest.mark.parametrize("camera_name", list(CAMERA_POSES))
def test_box_above_horizon_or_too_far_gives_no_position(camera_name):
    camera = make_camera(camera_name)
    # The horizon row straight ahead: where a very distant ground point appears.
    far_ahead = camera.t_ground_optical + np.array([1e5, 0.0, 0.0])
    far_ahead[2] = 0.0
    (u, horizon_row), = camera.project(far_ahead[None])[0]
    half_width = 20.0
    boxes = np.array([
        [u - half_width, horizon_row - 60, u + half_width, horizon_row - 2],  # bottom above
        [u - half_width, horizon_row - 60, u + half_width, horizon_row + 1],  # just below: far
        [u - half_width, horizon_row, u + half_width, horizon_row + 150],     # near
    ])
    contacts = ground_positions(camera, boxes, rectified=False, max_range=80.0)
    assert contacts.valid.tolist() == [False, False, True]
    assert np.isnan(contacts.points[:2]).all() and np.isnan(contacts.covariance[:2]).all()
    assert np.isnan(contacts.ranges[:2]).all() and contacts.ranges[2] < 80.0
    # The same box bottom 1 px below the horizon is valid with a large enough max_range.
    assert ground_positions(camera, boxes[1:2], rectified=False, max_range=1e6).valid[0]


def test_covariance_follows_the_line_of_sight():
    camera = make_camera("pitched-down-rolled-left")
    cars = [(10.0, 3.0), (40.0, 3.0)]
    boxes = np.array([image_box(camera, car) for car in cars])
    contacts = ground_positions(camera, boxes, rectified=True)
    shifted = ground_positions(camera, boxes + [0.0, 0.0, 0.0, 1.0], rectified=True)
    for i in range(len(cars)):
        values, vectors = np.linalg.eigh(contacts.covariance[i, :2, :2])
        sight = contacts.points[i, :2] - camera.t_ground_optical[:2]
        sight /= np.linalg.norm(sight)
        # The larger axis lies along the line of sight, much larger than the lateral one.
        assert abs(vectors[:, 1] @ sight) > 0.999
        assert values[1] > 25 * values[0]
        # One row lower moves the point by about one sigma towards the camera.
        moved = np.linalg.norm(shifted.points[i, :2] - contacts.points[i, :2])
        assert 0.7 < moved / np.sqrt(values[1]) < 1.4
    sigmas = np.sqrt(np.linalg.eigvalsh(contacts.covariance[:, :2, :2])[:, 1])
    assert sigmas[1] > 10 * sigmas[0]  # ~ range squared: 16x from 10 m to 40 m
    assert np.all(contacts.covariance[:, 2, :] == 0) and np.all(contacts.covariance[:, :, 2] == 0)


def test_rendered_synthetic_vehicles():
    """The renderer's own vehicles, boxed from the drawn pixels: range within 2 % too."""
    camera = default_camera()
    image, _ = SyntheticRoad(camera).render(0.0)
    boxes, truth = [], []
    for x, y, length, width, height, colour in VEHICLES:
        rows, cols = np.nonzero(np.all(image == np.array(colour, np.uint8), axis=-1))
        boxes.append([cols.min(), rows.min(), cols.max(), rows.max()])
        truth.append(line_of_sight_contact(camera, (x, y), (length, width, height)))
    contacts = ground_positions(camera, np.array(boxes, float), rectified=True)
    true_range = np.linalg.norm(np.array(truth)[:, :2] - camera.t_ground_optical[:2], axis=1)
    assert contacts.valid.all()
    assert np.abs(contacts.ranges / true_range - 1).max() < RANGE_TOLERANCE


# --- box estimates -------------------------------------------------------------------------

@pytest.mark.parametrize("camera_name", ["level", "offset-distorted"])
def test_box_estimates_for_cars_ahead(camera_name):
    camera = make_camera(camera_name)
    x0, y0 = camera.t_ground_optical[:2]
    near_faces = np.array([10.0, 25.0])
    cars = [(x0 + near + CAR[0] / 2, y0) for near in near_faces]
    boxes = np.array([image_box(camera, car) for car in cars])
    contacts = ground_positions(camera, boxes, rectified=False)
    estimate = box_estimates(camera, boxes, contacts.points, np.zeros(2, int), rectified=False)
    length, width, height = CAR
    np.testing.assert_allclose(estimate.sizes[:, 0], length)
    # Straight ahead only the rear face shows (the camera is as high as the roof), so its
    # width and height come out; pitch and roll widen them a little.
    np.testing.assert_allclose(estimate.sizes[:, 1], width, rtol=0.02)
    np.testing.assert_allclose(estimate.sizes[:, 2], height, rtol=0.02)
    # With the true length the centre is as good as the contact point.
    truth_centres = np.array([[x, y, height / 2] for x, y in cars])
    centre_error = np.linalg.norm(estimate.centres - truth_centres, axis=1)
    assert np.all(centre_error < RANGE_TOLERANCE * near_faces), centre_error
    np.testing.assert_allclose(estimate.yaw, 0.0, atol=0.01)


def test_box_estimate_orientation_and_length_priors():
    camera = make_camera("level")
    cars = [(12.0, 4.0), (20.0, -5.0), (30.0, 0.5)]
    boxes = np.array([image_box(camera, car) for car in cars])
    contacts = ground_positions(camera, boxes, rectified=True)
    classes = np.array([0, 1, 2])
    estimate = box_estimates(camera, boxes, contacts.points, classes, {1: 10.0}, rectified=True)
    np.testing.assert_allclose(estimate.sizes[:, 0], [4.5, 10.0, 4.5])
    sight = contacts.points[:, :2] - camera.t_ground_optical[:2]
    np.testing.assert_allclose(estimate.yaw, np.arctan2(sight[:, 1], sight[:, 0]))
    # The quaternion is the yaw about z, unit length, as (x, y, z, w).
    np.testing.assert_allclose(estimate.quaternions[:, :2], 0.0)
    np.testing.assert_allclose(np.linalg.norm(estimate.quaternions, axis=1), 1.0)
    np.testing.assert_allclose(2 * np.arctan2(estimate.quaternions[:, 2], estimate.quaternions[:, 3]),
                               estimate.yaw)
    # Centre: half a length beyond the contact point along the line of sight, half a height up.
    beyond = estimate.centres[:, :2] - contacts.points[:, :2]
    np.testing.assert_allclose(np.linalg.norm(beyond, axis=1), estimate.sizes[:, 0] / 2)
    cross = beyond[:, 0] * sight[:, 1] - beyond[:, 1] * sight[:, 0]
    np.testing.assert_allclose(cross, 0.0, atol=1e-9)
    np.testing.assert_allclose(estimate.centres[:, 2], estimate.sizes[:, 2] / 2)
    np.testing.assert_allclose(class_lengths(classes, [4.0, 12.0], default_length=5.0),
                               [4.0, 12.0, 5.0])
    invalid = box_estimates(camera, boxes[:1], np.full((1, 3), np.nan), [0], rectified=True)
    assert np.isnan(invalid.centres).all()


# --- tracking ------------------------------------------------------------------------------

DT = 0.1
FRAMES = 20
MAX_MISSED = 5
# Cars of the tracking sequence: centre (x, y) at frame 0, velocity relative to the ego
# vehicle (m/s), and the frames in which they are detected.
SEQUENCE_CARS = {
    "slower-left": ((15.0, 3.5), (-1.5, 0.0), set(range(FRAMES)) - {6, 7, 8}),  # missed 3 frames
    "faster-right": ((26.0, -3.5), (2.0, 0.0), set(range(FRAMES))),
    "cutting-in": ((13.0, -3.0), (0.5, 2.0), set(range(FRAMES))),       # crosses into the ego lane
    "leaving": ((40.0, 0.0), (-3.0, 0.0), set(range(10)) | {17, 18, 19}),  # gone 7 frames, back
    "arriving": ((30.0, 3.5), (1.0, 0.0), set(range(12, FRAMES))),
}


def sequence_frame(camera: CameraModel, frame: int):
    """Detections of one frame: names, boxes, class ids and the cars' true velocities."""
    names = [name for name, (_, _, seen) in SEQUENCE_CARS.items() if frame in seen]
    start = np.array([SEQUENCE_CARS[n][0] for n in names], float).reshape(-1, 2)
    velocities = np.array([SEQUENCE_CARS[n][1] for n in names], float).reshape(-1, 2)
    boxes = np.array([image_box(camera, c) for c in start + velocities * frame * DT]).reshape(-1, 4)
    return names, boxes, np.zeros(len(names), np.int64), velocities


def run_sequence(camera: CameraModel, with_ground: bool = True):
    tracker = Tracker(max_missed=MAX_MISSED)
    log = []
    for frame in range(FRAMES):
        names, boxes, classes, true_velocities = sequence_frame(camera, frame)
        ground = ground_positions(camera, boxes, rectified=False).points if with_ground else None
        ids = tracker.update(boxes, classes, ground, frame * DT)
        log.append(dict(names=names, ids=ids, velocities=tracker.velocities,
                        true_velocities=true_velocities, ended=tracker.ended_ids()))
    return log


@pytest.fixture(scope="module")
def tracked_sequence():
    return run_sequence(make_camera("offset-distorted"))


def ids_by_car(log) -> dict[str, list[tuple[int, int]]]:
    seen: dict[str, list[tuple[int, int]]] = {}
    for frame, entry in enumerate(log):
        for name, track_id in zip(entry["names"], entry["ids"]):
            seen.setdefault(name, []).append((frame, int(track_id)))
    return seen


def test_ids_stable_and_distinct(tracked_sequence):
    seen = ids_by_car(tracked_sequence)
    first_ids = {name: frames_ids[0][1] for name, frames_ids in seen.items()}
    assert sorted(first_ids.values())[0] == 1
    assert len(set(first_ids.values())) == len(first_ids)
    for name in ("slower-left", "faster-right", "cutting-in", "arriving"):
        # One id for the whole sequence, across the 3 missed frames too.
        assert {track_id for _, track_id in seen[name]} == {first_ids[name]}, name
    for entry in tracked_sequence:
        assert entry["ids"].dtype == np.int64 and len(set(entry["ids"])) == len(entry["ids"])


def test_ended_track_id_is_never_reused(tracked_sequence):
    seen = ids_by_car(tracked_sequence)
    old_id = seen["leaving"][0][1]
    assert {i for f, i in seen["leaving"] if f < 10} == {old_id}
    # Missed in frames 10..15: still alive after 5 misses, ended by the 6th.
    ended_at = [frame for frame, entry in enumerate(tracked_sequence) if old_id in entry["ended"]]
    assert ended_at == [10 + MAX_MISSED]
    assert sum(len(entry["ended"]) for entry in tracked_sequence) == 1
    # Back in frame 17: a new id, larger than every id given before.
    new_ids = {i for f, i in seen["leaving"] if f >= 17}
    assert len(new_ids) == 1 and new_ids.pop() > seen["arriving"][0][1] > old_id


def test_velocities_converge(tracked_sequence):
    """Four frames after a track starts, its velocity is within 0.1 m/s of the car's for
    cars moving along the road, 0.4 m/s for the car cutting in: a track follows the contact
    point, which slides along the car's near face as the bearing to it changes."""
    first_frame: dict[int, int] = {}
    for frame, entry in enumerate(tracked_sequence):
        for track_id in entry["ids"]:
            first_frame.setdefault(int(track_id), frame)
    assert np.isnan(tracked_sequence[0]["velocities"]).all()  # one position is no velocity
    checked = 0
    for frame, entry in enumerate(tracked_sequence):
        settled = np.array([frame - first_frame[int(i)] >= 4 for i in entry["ids"]], bool)
        error = np.linalg.norm(entry["velocities"] - entry["true_velocities"], axis=1)
        crossing = np.array([name == "cutting-in" for name in entry["names"]], bool)
        assert np.all(error[settled & ~crossing] < 0.1), (frame, error)
        assert np.all(error[settled & crossing] < 0.4), (frame, error)
        checked += settled.sum()
    assert checked > 50


def test_without_ground_positions_ids_stay_stable_and_velocities_unknown():
    log = run_sequence(make_camera("level"), with_ground=False)
    seen = ids_by_car(log)
    for name in ("slower-left", "faster-right", "cutting-in", "arriving"):
        assert len({track_id for _, track_id in seen[name]}) == 1, name
    assert all(np.isnan(entry["velocities"]).all() for entry in log)


def test_ground_distance_matches_a_fast_car_whose_boxes_do_not_overlap():
    camera = make_camera("level")
    # 8 m/s across the view, 0.3 s between frames: the boxes do not overlap at all.
    centres = [(10.0, 2.0), (10.0, -0.4)]
    boxes = np.array([image_box(camera, c) for c in centres])
    assert box_iou(boxes[:1], boxes[1:])[0, 0] == 0.0
    ground = ground_positions(camera, boxes, rectified=True).points
    with_ground, without_ground = Tracker(), Tracker()
    for frame in range(2):
        a = with_ground.update(boxes[frame:frame + 1], [0], ground[frame:frame + 1], 0.3 * frame)
        b = without_ground.update(boxes[frame:frame + 1], [0], None, 0.3 * frame)
    assert a.tolist() == [1] and b.tolist() == [2]
    contact_motion = np.diff([line_of_sight_contact(camera, c)[:2] for c in centres], axis=0)[0]
    np.testing.assert_allclose(with_ground.velocities[0], contact_motion / 0.3, atol=0.3)


def test_same_box_of_another_class_is_another_object():
    tracker = Tracker()
    box = np.array([[100.0, 300.0, 200.0, 380.0]])
    assert tracker.update(box, [0], None, 0.0).tolist() == [1]
    assert tracker.update(box, [1], None, 0.1).tolist() == [2]
    assert tracker.update(box, [0], None, 0.2).tolist() == [1]


def test_time_going_backwards_ends_every_track():
    tracker = Tracker()
    boxes = np.array([[100.0, 300.0, 200.0, 380.0], [500.0, 300.0, 600.0, 380.0]])
    assert tracker.update(boxes, [0, 0], None, 5.0).tolist() == [1, 2]
    assert tracker.update(boxes, [0, 0], None, 1.0).tolist() == [3, 4]
    assert sorted(tracker.ended_ids().tolist()) == [1, 2]
    assert tracker.update(np.zeros((0, 4)), np.zeros(0, int), np.zeros((0, 2)), 1.1).tolist() == []
    assert tracker.velocities.shape == (0, 2)


# --- measurements (python test/test_objects3d.py) -----------------------------------------

def _measure() -> None:
    print("horizontal range error |relative| of cars -5..5 m aside (21 positions per distance)")
    for name in ("level", "offset-distorted"):
        camera = make_camera(name)
        x0, y0 = camera.t_ground_optical[:2]
        for near in (10.0, 20.0, 40.0):
            cars = [(x0 + near + CAR[0] / 2, y0 + y) for y in np.linspace(-5.0, 5.0, 21)]
            errors = np.abs(range_errors(camera, camera, cars)) * 100
            print(f"  camera {name:26s} {near:4.0f} m: median {np.median(errors):.2f} %, "
                  f"worst {errors.max():.2f} %")
    for name in CAMERA_POSES:
        camera = make_camera(name)
        errors = np.abs(range_errors(camera, camera, car_grid(camera))) * 100
        print(f"  camera {name:26s} 8-40 m grid: median {np.median(errors):.2f} %, "
              f"worst {errors.max():.2f} %")

    camera = make_camera("offset-distorted")
    rng = np.random.default_rng(0)
    for count in (10, 100):
        centres = np.column_stack([rng.uniform(15, 60, count), rng.uniform(-8, 8, count)])
        velocities = rng.uniform(-2, 2, (count, 2))
        frames = [np.array([image_box(camera, c + v * DT * f) for c, v in zip(centres, velocities)])
                  for f in range(30)]
        classes = np.zeros(count, np.int64)
        tracker = Tracker()
        geometry_ms, tracking_ms, ids = [], [], set()
        for frame, boxes in enumerate(frames):
            start = time.perf_counter()
            contacts = ground_positions(camera, boxes, rectified=False)
            box_estimates(camera, boxes, contacts.points, classes, rectified=False)
            middle = time.perf_counter()
            ids.update(tracker.update(boxes, classes, contacts.points, frame * DT).tolist())
            end = time.perf_counter()
            if frame >= 5:  # after the tracks exist
                geometry_ms.append((middle - start) * 1e3)
                tracking_ms.append((end - middle) * 1e3)
        geometry, tracking = np.median(geometry_ms), np.median(tracking_ms)
        print(f"{count:4d} detections: 3D {geometry:.3f} ms + tracking {tracking:.3f} ms = "
              f"{geometry + tracking:.3f} ms per frame (median of {len(geometry_ms)} frames); "
              f"{len(ids)} ids for {count} cars over {len(frames)} frames")

if __name__ == "__main__":
    _measure()
