"""The live frame processor (model.live) on synthetic frames, with a fake detector and model.

A scene is a noisy background (blue channel >= 1) with textured square "faces" whose
blue channel is exactly 0; the fake detector finds those squares (and counts its
calls), the fake model returns scripted probabilities. So tracking, numbering,
smoothing, detection cadence and frame dropping are checked exactly, in milliseconds.
"""

from __future__ import annotations

import dataclasses
import threading

import cv2
import numpy as np
import pytest

from model.face_detect import Detection
from model.labels import NUM_AGE_BINS
from model.live import FrameClock, LiveConfig, LiveProcessor, LiveStats, draw, iou, match_boxes
from model.results import HeadOutputs

H, W, SIDE = 240, 320, 60


def texture(seed: int, side: int = SIDE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 255, (side // 6, side // 6, 3)).astype(np.uint8)
    face = cv2.resize(small, (side, side), interpolation=cv2.INTER_NEAREST)
    face[..., 2] = 0
    return face


def scene(positions: dict[int, tuple[int, int]], seed: int = 0) -> np.ndarray:
    """A frame with face ``k`` (its own texture) at top-left ``positions[k]``."""
    rng = np.random.default_rng(1000 + seed)
    frame = rng.integers(1, 255, (H, W, 3)).astype(np.uint8)
    frame = cv2.GaussianBlur(frame, (0, 0), 3)
    frame[..., 2] = np.maximum(frame[..., 2], 1)
    for k, (x, y) in positions.items():
        frame[y:y + SIDE, x:x + SIDE] = texture(k)
    return frame


class FakeDetector:
    """Finds the blue-free squares; landmarks sit where a frontal face's would."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls = 0
        self.gate = gate
        self.pad_retries: list[bool] = []  # what each call asked for

    def detect(self, photo, *, pad_retry=True):
        self.calls += 1
        self.pad_retries.append(pad_retry)
        if self.gate is not None:
            assert self.gate.wait(10)
        mask = (photo[..., 2] == 0).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        out = []
        for x, y, w, h, area in stats[1:count]:
            if area < 100:
                continue
            rel = {"left_eye": (0.3, 0.35), "right_eye": (0.7, 0.35), "nose": (0.5, 0.55),
                   "mouth_left": (0.35, 0.75), "mouth_right": (0.65, 0.75)}
            marks = {k: (float(x + a * w), float(y + b * h)) for k, (a, b) in rel.items()}
            out.append(Detection((float(x), float(y), float(w), float(h)), 0.99, marks))
        return sorted(out, key=lambda d: d.box[0])


class FakeModel:
    """Returns scripted outputs: call ``i`` gives female probability ``female[i % len]`` and age ``ages[i % len]``."""

    input_size = 32

    def __init__(self, female=(0.9,), ages=(30,)):
        self.female, self.ages = female, ages
        self.calls = 0
        self.batches: list[int] = []

    def __call__(self, faces):
        assert faces.shape[1:] == (32, 32, 3) and faces.dtype == np.uint8
        n = len(faces)
        self.batches.append(n)
        p = self.female[self.calls % len(self.female)]
        age = self.ages[self.calls % len(self.ages)]
        self.calls += 1
        dist = np.zeros((n, NUM_AGE_BINS))
        dist[:, age] = 1.0
        eth = np.tile([0.1, 0.1, 0.6, 0.1, 0.1], (n, 1))
        return HeadOutputs(age=np.full(n, float(age)), age_interval=np.tile([age, age], (n, 1)).astype(float),
                           age_dist=dist, gender=np.tile([1 - p, p], (n, 1)), ethnicity=eth)


def processor(detector=None, model=None, background=False, **config) -> LiveProcessor:
    return LiveProcessor(detector or FakeDetector(), model or FakeModel(), LiveConfig(**config),
                         background=background)


def truth_box(x: int, y: int) -> tuple[int, int, int, int]:
    return (x, y, SIDE, SIDE)


def test_iou_and_greedy_matching():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    old = [(0, 0, 10, 10), (100, 0, 10, 10)]
    new = [(101, 1, 10, 10), (300, 0, 10, 10), (1, 0, 10, 10)]
    pairs, lost, fresh = match_boxes(old, new, 0.3)
    assert sorted(pairs) == [(0, 2), (1, 0)] and lost == [] and fresh == [1]


def test_a_moving_face_keeps_its_number_and_is_followed_between_detections():
    detector, model = FakeDetector(), FakeModel()
    live = processor(detector, model, detect_every=5)
    for i in range(40):
        x, y = 20 + 5 * i, 60 + (i % 7)  # 200 px across, wobbling
        out = live.process(scene({1: (x, y)}))
        assert [f.number for f in out.faces] == [1], i
        assert iou(out.faces[0].box, truth_box(x, y)) > 0.8, (i, out.faces[0].box, (x, y))
    # detection ran on frame 1 and then every 5th frame, not on every frame
    assert detector.calls == 1 + (40 - 1) // 5
    assert model.batches == [1] * 40


def test_two_faces_keep_their_numbers_while_crossing_paths_vertically_apart():
    live = processor(detect_every=4)
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for i in range(30):
        a, b = (10 + 7 * i, 20), (240 - 7 * i, 150)
        out = live.process(scene({1: a, 2: b}))
        assert len(out.faces) == 2
        for face in out.faces:
            which = 0 if iou(face.box, truth_box(*a)) > 0.6 else 1
            assert iou(face.box, truth_box(*(a, b)[which])) > 0.6
            seen[which].add(face.number)
    assert seen == {0: {1}, 1: {2}}  # each face kept one number; the left one, found first, is 1


def test_a_face_that_leaves_is_dropped_and_a_newcomer_gets_a_free_number():
    live = processor(detect_every=3, max_missed=2, max_undetected=1)
    for _ in range(3):
        out = live.process(scene({1: (20, 20), 2: (200, 100)}))
    assert [f.number for f in out.faces] == [1, 2]
    for _ in range(8):  # face 1 leaves
        out = live.process(scene({2: (200, 100)}))
    assert [f.number for f in out.faces] == [2] and len(live.tracks) == 1
    for _ in range(6):  # someone else comes in
        out = live.process(scene({3: (40, 150), 2: (200, 100)}))
    assert sorted(f.number for f in out.faces) == [1, 2]
    newcomer = next(f for f in out.faces if f.number == 1)
    assert iou(newcomer.box, truth_box(40, 150)) > 0.8


def test_a_face_the_tracker_loses_keeps_its_number_when_detected_again_nearby():
    detector = FakeDetector()
    live = processor(detector, detect_every=40, max_missed=60)
    live.process(scene({1: (60, 80)}))
    out = live.process(scene({1: (170, 80)}))  # jumps almost two widths: beyond the tracker's search window
    assert out.faces == [] and len(live.tracks) == 1  # lost for now, not yet forgotten
    for _ in range(30):
        out = live.process(scene({1: (170, 80)}))
        if out.faces:
            break
    assert detector.calls == 2  # the loss asked for a detection long before detect_every
    assert [f.number for f in out.faces] == [1] and len(live.tracks) == 1
    assert iou(out.faces[0].box, truth_box(170, 80)) > 0.8


def test_tracks_survive_a_change_of_resolution():
    live = processor(detect_every=50)
    for x in (100, 104, 108):
        live.process(scene({1: (x, 80)}))
    small = cv2.resize(scene({1: (112, 80)}), (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    out = live.process(small)  # the sender halved the resolution: no detection is due, tracking carries on
    assert [f.number for f in out.faces] == [1]
    assert iou(out.faces[0].box, (56, 40, SIDE // 2, SIDE // 2)) > 0.7


def test_labels_are_smoothed_per_track_instead_of_flickering():
    model = FakeModel(female=(0.95, 0.05), ages=(20, 40))  # raw answers flip every frame
    live = processor(model=model, smoothing=0.3)
    genders, ages, probs = [], [], []
    for _ in range(30):
        face = live.process(scene({1: (100, 80)})).faces[0]
        genders.append(face.gender)
        ages.append(face.age)
        probs.append(face.gender_probability)
    steady_ages = ages[10:]
    assert max(steady_ages) - min(steady_ages) < 8  # raw ages jump by 20 every frame
    assert 24 < np.mean(steady_ages) < 36
    # the averaged gender sits near 50/50 and is labelled "Unsure", never flipping Male/Female each frame
    assert all(p < 0.7 for p in probs[10:])
    assert live.process(scene({1: (100, 80)})).faces[0].label().endswith("Unsure")
    # a steady model gives exactly its answer back
    steady = processor(model=FakeModel(female=(0.9,), ages=(33,)))
    face = [steady.process(scene({1: (100, 80)})) for _ in range(5)][-1].faces[0]
    assert face.gender == "female" and face.gender_probability == pytest.approx(0.9)
    assert face.age == pytest.approx(33) and face.ethnicity == "asian"


def test_smoothing_is_per_face():
    class PerFace(FakeModel):
        def __call__(self, faces):
            out = super().__call__(faces)  # left face male, right female
            return dataclasses.replace(out, gender=np.array([[0.9, 0.1], [0.1, 0.9]])[: len(faces)])

    live = processor(model=PerFace())
    for _ in range(5):
        out = live.process(scene({1: (20, 50), 2: (220, 50)}))
    assert [(f.number, f.gender) for f in out.faces] == [(1, "male"), (2, "female")]


def test_stale_frames_are_dropped_and_queued_frames_collapse_to_the_newest():
    model = FakeModel()
    live = processor(model=model, max_frame_age=0.2)
    frame = scene({1: (100, 80)})
    assert live.process(frame, age_s=0.5) is None
    assert model.calls == 0 and live.frame_number == 0
    assert live.process(frame, age_s=0.05) is not None
    assert live.latest(["a", "b", "c"]) == "c"
    snap = live.stats.snapshot()
    assert snap["dropped"] == 3 and snap["processed"] == 1
    assert live.latest([]) is None


def test_frame_clock_measures_lateness_against_the_fastest_frame():
    now = [100.0]
    clock = FrameClock(clock=lambda: now[0])
    assert clock.age(0.0) == 0.0
    now[0] = 100.033
    assert clock.age(0.033) == pytest.approx(0.0)
    now[0] = 100.400  # frame captured at 0.066 arrives 334 ms late
    assert clock.age(0.066) == pytest.approx(0.334)
    assert clock.age(None) == 0.0
    now[0] = 100.5  # a new stream: its media clock starts again at 0
    assert clock.age(0.0) == 0.0
    now[0] = 100.533
    assert clock.age(0.033) == pytest.approx(0.0)


def test_a_new_stream_forgets_the_old_faces():
    now = [0.0]
    live = LiveProcessor(FakeDetector(), FakeModel(), LiveConfig(new_stream_after=2.0), background=False,
                         clock=lambda: now[0])
    assert [f.number for f in live.process(scene({1: (20, 20)})).faces] == [1]
    now[0] = 10.0  # camera stopped and started again; someone else is in view elsewhere
    out = live.process(scene({2: (200, 120)}))
    assert [f.number for f in out.faces] == [1] and len(live.tracks) == 1
    assert iou(out.faces[0].box, truth_box(200, 120)) > 0.8


def test_background_detection_never_blocks_frames():
    gate = threading.Event()
    detector = FakeDetector(gate=gate)
    live = processor(detector, background=True, detect_every=5)
    out = live.process(scene({1: (50, 50)}))  # detection starts on a thread and waits at the gate
    assert out.faces == [] and detector.calls <= 1
    for i in range(3):  # frames keep flowing while MTCNN is busy (the face moves meanwhile)
        out = live.process(scene({1: (50 + 20 * (i + 1), 50)}))
        assert out.faces == []
    gate.set()
    assert live.wait_for_detection()
    out = live.process(scene({1: (130, 60)}))  # frame 1's detection lands on frame 5: the face moved 80 px
    assert [f.number for f in out.faces] == [1]
    assert iou(out.faces[0].box, truth_box(130, 60)) > 0.8
    out = live.process(scene({1: (140, 60)}))  # and is followed from there
    assert iou(out.faces[0].box, truth_box(140, 60)) > 0.8


def test_detection_errors_are_reported_and_the_stream_goes_on():
    class Crowd(FakeDetector):
        def detect(self, photo, *, pad_retry=True):
            raise ValueError("found 30 faces")

    live = processor(Crowd())
    out = live.process(scene({1: (50, 50)}))
    assert out is not None and out.faces == []
    assert live.detection_error == "ValueError: found 30 faces"


def test_an_empty_scene_tries_the_padded_copy_only_now_and_then():
    """The padded second try triples an empty frame's detection; it runs on the first of every
    pad_retry_every empty detections in a row (so right after a face was found), and on each of the
    first pad_retry_every after a face close to the camera (it may have grown past the frame)."""
    detector = FakeDetector()
    live = processor(detector, detect_every=2, pad_retry_every=3)  # empty scenes detect every frame
    for _ in range(7):
        live.process(scene({}))
    assert detector.pad_retries == [True, False, False, True, False, False, True]
    live.process(scene({1: (60, 60)}))  # a small face: found, and the count starts again
    detector.pad_retries.clear()
    for _ in range(6):
        live.process(scene({}))
    assert detector.pad_retries == [True, False, False, True, False, False]

    close = FakeDetector()
    live = processor(close, detect_every=2, pad_retry_every=3, close_face=SIDE / H)
    live.process(scene({1: (60, 60)}))  # now a face SIDE px high counts as close
    close.pad_retries.clear()
    for _ in range(7):
        live.process(scene({}))
    assert close.pad_retries == [True, True, True, True, False, False, True]  # then back to one in three


def test_freeze_keeps_the_raw_frame_and_its_faces():
    live = processor()
    frame = scene({1: (60, 60)})
    out = live.process(frame)
    raw, faces = live.last_frame()
    assert raw is frame and not np.array_equal(out.image, frame)  # the annotation is a copy
    assert [f.number for f in faces] == [1]


def test_draw_puts_a_coloured_box_and_a_label_on_a_copy():
    from model.live import TRACK_COLOURS, LiveFace

    frame = np.zeros((120, 160, 3), np.uint8)
    face = LiveFace(number=2, box=(40, 50, 50, 50), age=31.4, age_interval=(25, 38), gender="female",
                    gender_probability=0.91, ethnicity="white", ethnicity_probability=0.7)
    out = draw(frame, [face])
    assert face.label() == "2: 31 y, Female"
    assert frame.max() == 0
    assert tuple(out[75, 40]) == TRACK_COLOURS[1]  # left edge of the box
    assert (out[30:50, 40:150] == 255).any()  # white label text above the box


def test_stats_report_fps_latency_and_stage_medians():
    now = [0.0]
    stats = LiveStats(window=2.0, clock=lambda: now[0])
    for i in range(21):
        now[0] = i * 0.05  # 20 frames per second
        stats.add_frame({"total": 0.03, "model": 0.01}, latency=0.04 + 0.001 * i, faces=1)
        stats.add_received(2)  # two camera frames arrive per annotated one: 40 in
    stats.add_detection(0.2)
    snap = stats.snapshot()
    assert snap["fps"] == pytest.approx(20.0) and snap["input_fps"] == pytest.approx(40.0)
    assert snap["stages_ms"]["total"] == pytest.approx(30.0) and snap["stages_ms"]["model"] == pytest.approx(10.0)
    assert snap["latency_ms"] == pytest.approx(50.0) and snap["detect_ms"] == pytest.approx(200.0)
    now[0] = 10.0
    assert stats.snapshot()["fps"] == 0.0  # nothing in the last 2 s


@pytest.mark.slow
def test_real_model_on_the_astronaut_clip():
    """The shipped model through the live loop: one face, number 1, on the same box as a still analysis."""
    from model import settings
    from model.analyzer import FaceAnalyzer
    from model.live_bench import astronaut_clip

    if not settings.DEFAULT_MODEL_PATH.is_file():
        pytest.skip("the shipped model file is missing")
    analyzer = FaceAnalyzer()
    frames = astronaut_clip(12)
    live = LiveProcessor(analyzer.detector, analyzer.predictor, background=False)
    outs = [live.process(f) for f in frames]
    assert all([f.number for f in o.faces] == [1] for o in outs)
    still = analyzer.analyze(frames[-1])
    assert len(still) == 1
    assert iou(outs[-1].faces[0].box, still[0].box) > 0.7
    assert abs(outs[-1].faces[0].age - still[0].age) < 10


def test_live_intervals_follow_the_model_read_out_calibration():
    """The live loop smooths the age distribution over frames, then reads the interval out the way
    the photo pipeline does: with the predictor's calibration (here: twice as wide)."""
    from model.calibration import Calibration

    def width(model) -> float:
        live = processor(model=model)
        for _ in range(3):
            out = live.process(scene({1: (100, 80)}))
        low, high = out.faces[0].age_interval
        return high - low

    class Widened(FakeModel):
        calibration = Calibration(interval_below=(2.0, 0.0), interval_above=(2.0, 0.0))

    class Spread(FakeModel):
        def __call__(self, faces):
            out = super().__call__(faces)
            bins = np.arange(out.age_dist.shape[1])
            dist = np.exp(-0.5 * ((bins - 40) / 5.0) ** 2)
            return dataclasses.replace(out, age_dist=np.tile(dist / dist.sum(), (len(faces), 1)))

    class SpreadWidened(Spread):
        calibration = Calibration(interval_below=(2.0, 0.0), interval_above=(2.0, 0.0))

    assert width(SpreadWidened()) == pytest.approx(2 * width(Spread()), rel=0.02)
    assert width(Widened()) >= width(FakeModel())
