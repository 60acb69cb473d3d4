"""Live video: the frame processor behind the Live page (no Streamlit here).

    processor = LiveProcessor(analyzer.detector, analyzer.predictor)
    out = processor.process(rgb_frame, age_s=0.02)   # None when the frame was too old
    out.image                                        # the frame with boxes and labels

MTCNN costs ~250-450 ms on a 640x480 frame, far more than a frame's budget, so it
runs every ``detect_every`` frames (sooner when a face is lost), by default on a
background thread while frames keep flowing; on an empty scene it skips the detector's
padded second try most of the time (``pad_retry_every``), so someone stepping in is found sooner. Between detections each face is
followed by template matching (normalised cross-correlation of the face patch from
its last detection, searched around its box on a downscaled grey frame; ~1 ms) and
its five landmarks move with the box. Detections are matched to tracks by IoU
against where each track was *in the detected frame*, so a face keeps its number
while it moves (and, when the tracker lost it, when it is detected again nearby);
tracks follow a change of resolution (WebRTC lowers it when short of CPU). Every frame, all visible faces are aligned exactly like photos
(model.align) and go through one batched compiled model call (model.inference); the
probabilities and the age distribution are averaged per track with an exponential
moving average, so labels do not flicker. Of the frames that queued up during the
last one, only the newest is processed (:meth:`LiveProcessor.latest`), and frames
older than ``max_frame_age`` when they reach the processor are dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from model.align import align_face, landmarks_array
from model.calibration import Calibration
from model.labels import ETHNICITIES, GENDERS, gender_headline

#: Per-frame stages, in the order they run (detect is only counted when it runs inline).
STAGES: tuple[str, ...] = ("track", "detect", "align", "model", "draw", "total")
#: Box colours (RGB) cycled by track number.
TRACK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (79, 70, 229), (219, 39, 119), (5, 150, 105), (217, 119, 6), (37, 99, 235), (124, 58, 237),
)


class Detector(Protocol):
    # list of model.face_detect.Detection; pad_retry: try a border-padded copy when nothing is found
    def detect(self, photo: np.ndarray, *, pad_retry: bool = True) -> list: ...


class Predictor(Protocol):
    input_size: int

    def __call__(self, faces: np.ndarray) -> Any: ...  # model.inference.HeadOutputs


@dataclass(frozen=True)
class LiveConfig:
    """Knobs of the live loop (defaults measured with ``python -m model.bench --video``)."""

    detect_every: int = 8  # frames between detections while every face is tracked
    iou_match: float = 0.3  # a detection continues a track when their boxes overlap this much
    rejoin_distance: float = 2.5  # or, for a track lost meanwhile, when centres are this many box widths apart
    track_min_score: float = 0.5  # template correlation below this: the face is lost in this frame
    max_missed: int = 3  # frames a track may be lost before it is removed
    max_undetected: int = 2  # detections in a row that may miss a tracked face before it is removed
    smoothing: float = 0.3  # weight of the newest frame in the per-track moving average
    max_frame_age: float = 0.25  # seconds; older frames are dropped, not processed
    search_margin: float = 0.6  # search window grows the box by this share of its width on each side
    catch_up_margin: float = 1.5  # the same, for the first search after a detection of an older frame
    template_width: int = 40  # px: faces are matched at this width (downscaled), whatever their size
    new_stream_after: float = 2.0  # seconds without frames: the next frame starts afresh (no old tracks)
    # On an empty scene the detector's padded second try (for a face too close to the camera to leave
    # MTCNN a margin) triples a detection's time, and so the wait before someone who steps in is found.
    # It runs on every pad_retry_every-th empty detection in a row (the first of them included), and on
    # each of the first pad_retry_every after a close face (box side at least close_face of the frame's
    # shorter side), which may have moved past the frame; then one in pad_retry_every again.
    pad_retry_every: int = 4
    close_face: float = 0.4


@dataclass
class LiveFace:
    """One tracked face in one frame, with its smoothed estimates."""

    number: int  # stable while the face is tracked; starts at 1
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    age: float
    age_interval: tuple[float, float]
    gender: str
    gender_probability: float
    ethnicity: str
    ethnicity_probability: float

    def label(self) -> str:
        return f"{self.number}: {self.age:.0f} y, {gender_headline(self.gender, self.gender_probability)}"


@dataclass
class LiveFrame:
    """The processor's answer for one frame."""

    image: np.ndarray  # annotated RGB copy of the frame
    faces: list[LiveFace]
    timings: dict[str, float]  # seconds per stage (STAGES) for this frame
    latency: float  # seconds from capture to annotated frame (frame age + total)
    frame_number: int


@dataclass
class Track:
    """A face followed across frames."""

    number: int
    box: np.ndarray  # (4,) float x, y, w, h in the current frame
    landmarks: np.ndarray  # (5, 2) float, moved with the box between detections
    template: np.ndarray  # grey face patch at ``scale``, from the last detection
    scale: float  # template px per frame px
    template_frame: int  # frame number the template was taken from
    history: dict[int, np.ndarray] = field(default_factory=dict)  # frame number -> box (recent only)
    missed: int = 0  # consecutive frames the template was not found
    catching_up: bool = False  # box is from an older frame (background detection): search wider once
    undetected: int = 0  # consecutive detections that did not find this face
    gender: np.ndarray | None = None  # smoothed (2,) probabilities
    ethnicity: np.ndarray | None = None  # smoothed (5,)
    age_dist: np.ndarray | None = None  # smoothed (K,)

    @property
    def visible(self) -> bool:
        return self.missed == 0


# --- geometry ---------------------------------------------------------------------------------


def iou(a, b) -> float:
    """Intersection over union of two x, y, w, h boxes."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def match_boxes(old: list, new: list, threshold: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Greedy IoU matching, best pairs first: (pairs (old i, new j), unmatched old, unmatched new)."""
    scores = sorted(((iou(a, b), i, j) for i, a in enumerate(old) for j, b in enumerate(new)), reverse=True)
    pairs, used_old, used_new = [], set(), set()
    for score, i, j in scores:
        if score < threshold:
            break
        if i in used_old or j in used_new:
            continue
        pairs.append((i, j))
        used_old.add(i)
        used_new.add(j)
    return (pairs, [i for i in range(len(old)) if i not in used_old],
            [j for j in range(len(new)) if j not in used_new])


def match_nearby(old: list, new: list, max_distance: float, eligible: list[bool]) -> list[tuple[int, int]]:
    """Greedy pairs (old i, new j) of eligible old boxes and new boxes whose centres are less
    than ``max_distance`` old-box widths apart, closest first."""
    def centre(b):
        return np.array([b[0] + b[2] / 2, b[1] + b[3] / 2], np.float64)

    scored = sorted((float(np.linalg.norm(centre(a) - centre(b))) / max(float(a[2]), 1.0), i, j)
                    for i, a in enumerate(old) if eligible[i] for j, b in enumerate(new))
    pairs, used_old, used_new = [], set(), set()
    for distance, i, j in scored:
        if distance >= max_distance:
            break
        if i not in used_old and j not in used_new:
            pairs.append((i, j))
            used_old.add(i)
            used_new.add(j)
    return pairs


def ema(previous: np.ndarray | None, new: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average; the first value is taken as is."""
    new = np.asarray(new, np.float64)
    return new.copy() if previous is None else (1.0 - weight) * previous + weight * new


def to_grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _face_patch(grey: np.ndarray, box: np.ndarray, width: int) -> tuple[np.ndarray, float] | None:
    """The box's grey patch resized to ``width`` px wide (None when the box leaves the frame)."""
    x, y, w, h = box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(grey.shape[1], int(round(x + w))), min(grey.shape[0], int(round(y + h)))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    scale = min(1.0, width / max(w, 1.0))
    patch = grey[y0:y1, x0:x1]
    size = (max(4, round(patch.shape[1] * scale)), max(4, round(patch.shape[0] * scale)))
    return cv2.resize(patch, size, interpolation=cv2.INTER_AREA), scale


def locate(grey: np.ndarray, template: np.ndarray, scale: float, box: np.ndarray,
           margin: float) -> tuple[np.ndarray, float]:
    """Where the template sits in ``grey`` near ``box``: (new box, correlation in [-1, 1]).

    Searches the box grown by ``margin`` x its width on each side, at the template's scale.
    """
    x, y, w, h = box
    pad = margin * w
    x0, y0 = max(0, int(x - pad)), max(0, int(y - pad))
    x1, y1 = min(grey.shape[1], int(np.ceil(x + w + pad))), min(grey.shape[0], int(np.ceil(y + h + pad)))
    window = grey[y0:y1, x0:x1]
    size = (round(window.shape[1] * scale), round(window.shape[0] * scale))
    if size[0] < template.shape[1] or size[1] < template.shape[0]:
        return box, -1.0
    window = cv2.resize(window, size, interpolation=cv2.INTER_AREA) if scale != 1.0 else window
    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
    # The template's top-left corner was the box's (rounded) top-left corner.
    moved = np.array([x0 + bx / scale, y0 + by / scale, w, h], np.float64)
    return moved, float(best)


# --- drawing ----------------------------------------------------------------------------------


def draw(frame: np.ndarray, faces: list[LiveFace]) -> np.ndarray:
    """A copy of the frame with a coloured box and a "number: age, gender" label per face."""
    out = np.ascontiguousarray(frame, np.uint8).copy()
    scale = max(out.shape[:2]) / 640.0
    thick = max(1, int(round(2 * scale)))
    font = 0.6 * max(scale, 0.6)
    for face in faces:
        x, y, w, h = face.box
        colour = TRACK_COLOURS[(face.number - 1) % len(TRACK_COLOURS)]
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick)
        text = face.label()
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
        top = y - th - base - 2 * thick if y - th - base - 2 * thick >= 0 else y + h
        cv2.rectangle(out, (x, top), (x + tw + 2 * thick + 4, top + th + base + 2 * thick), colour, -1)
        cv2.putText(out, text, (x + thick + 2, top + th + thick), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return out


# --- timing -----------------------------------------------------------------------------------


class FrameClock:
    """Age of a frame from its media timestamp: local arrival clock minus capture time.

    WebRTC frames carry a presentation time on the sender's clock; the smallest
    (arrival - media time) seen so far is taken as the fixed offset between the two
    clocks (the least-delayed frame), so a frame's age is how much later it reached
    us than that best case. A new stream (media time going backwards, or a pause of
    ``restart_after`` seconds) starts the estimate afresh.
    """

    def __init__(self, clock=time.monotonic, restart_after: float = 2.0):
        self.clock = clock
        self.restart_after = restart_after
        self.offset: float | None = None
        self._last: tuple[float, float] | None = None  # (arrival, media time) of the previous frame

    def restart(self) -> None:
        """Forget the clock offset: the next frame is taken as the least-delayed one."""
        self.offset = None

    def age(self, media_time: float | None) -> float:
        if media_time is None:
            return 0.0
        now, media_time = self.clock(), float(media_time)
        if self._last is not None and (media_time < self._last[1] or now - self._last[0] > self.restart_after):
            self.offset = None
        self._last = (now, media_time)
        offset = now - media_time
        if self.offset is None or offset < self.offset:
            self.offset = offset
        return offset - self.offset


class LiveStats:
    """Rolling figures over the last ``window`` seconds: fps, stage medians, latency."""

    def __init__(self, window: float = 3.0, clock=time.monotonic):
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._frames: deque[tuple[float, dict[str, float], float, int]] = deque()
        self._detections: deque[tuple[float, float]] = deque()
        self._received: deque[tuple[float, int]] = deque()  # (time, frames that arrived together)
        self.processed = 0
        self.dropped = 0
        self.last_frame_at: float | None = None

    def add_frame(self, timings: dict[str, float], latency: float, faces: int) -> None:
        now = self.clock()
        with self._lock:
            self._frames.append((now, timings, latency, faces))
            self.processed += 1
            self.last_frame_at = now
            self._trim(now)

    def add_detection(self, seconds: float) -> None:
        with self._lock:
            self._detections.append((self.clock(), seconds))

    def add_received(self, count: int) -> None:
        with self._lock:
            self._received.append((self.clock(), count))

    def add_dropped(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count

    def _trim(self, now: float) -> None:
        for queue in (self._frames, self._detections, self._received):
            while queue and queue[0][0] < now - self.window:
                queue.popleft()

    def snapshot(self) -> dict[str, Any]:
        """fps (annotated, and camera frames in), median ms per stage, median and 90th-percentile
        latency ms, counts (plain floats)."""
        now = self.clock()
        with self._lock:
            self._trim(now)
            frames = list(self._frames)
            detections = [s for _, s in self._detections]
            received = list(self._received)
            out: dict[str, Any] = {"processed": self.processed, "dropped": self.dropped,
                                   "idle_s": None if self.last_frame_at is None else now - self.last_frame_at}
        if len(frames) >= 2:
            span = max(frames[-1][0] - frames[0][0], 1e-6)
            out["fps"] = (len(frames) - 1) / span
        else:
            out["fps"] = 0.0
        # camera frames per second reaching the processor (the ones it skipped included)
        out["input_fps"] = (sum(n for _, n in received[1:]) / max(received[-1][0] - received[0][0], 1e-6)
                            if len(received) >= 2 else 0.0)
        out["stages_ms"] = {
            stage: 1000.0 * float(np.median([t.get(stage, 0.0) for _, t, _, _ in frames])) if frames else 0.0
            for stage in STAGES
        }
        latencies = [lat for _, _, lat, _ in frames]
        out["latency_ms"] = 1000.0 * float(np.median(latencies)) if latencies else 0.0
        out["latency_p90_ms"] = 1000.0 * float(np.percentile(latencies, 90)) if latencies else 0.0
        out["detect_ms"] = 1000.0 * float(np.median(detections)) if detections else 0.0
        out["faces"] = frames[-1][3] if frames else 0
        return out


# --- background detection ---------------------------------------------------------------------


class _DetectionJob:
    def __init__(self, frame_number: int, frame: np.ndarray, pad_retry: bool = True):
        self.frame_number = frame_number
        self.frame = frame
        self.pad_retry = pad_retry
        self.detections: list = []
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.done = threading.Event()

    def run(self, detector: Detector) -> None:
        t0 = time.perf_counter()
        try:
            self.detections = list(detector.detect(self.frame, pad_retry=self.pad_retry))
        except Exception as exc:  # e.g. a crowd (TooManyFacesError): reported, the stream goes on
            self.error = exc
        self.seconds = time.perf_counter() - t0
        self.done.set()


class DetectionWorker:
    """Runs one detection at a time on a daemon thread; frames never wait for it."""

    def __init__(self, detector: Detector):
        self.detector = detector
        self._job: _DetectionJob | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        job = self._job
        return job is not None and not job.done.is_set()

    @property
    def pending(self) -> bool:
        """A detection is running or finished but not yet collected."""
        return self._job is not None

    def wait(self, timeout: float) -> bool:
        """Block until the current detection finishes (False if none, or on timeout)."""
        job = self._job
        return job is not None and job.done.wait(timeout)

    def submit(self, frame_number: int, frame: np.ndarray, pad_retry: bool = True) -> bool:
        """Start detecting ``frame`` unless a detection is running or uncollected."""
        with self._lock:
            if self._job is not None:
                return False
            job = self._job = _DetectionJob(frame_number, frame, pad_retry)
        threading.Thread(target=job.run, args=(self.detector,), name="facelens-live-detect", daemon=True).start()
        return True

    def collect(self, wait: float | None = 0.0) -> _DetectionJob | None:
        """The finished job (and forget it), or None while it runs; ``wait`` seconds at most (None: forever)."""
        with self._lock:
            job = self._job
        if job is None or not job.done.wait(wait):
            return None
        with self._lock:
            self._job = None
        return job


# --- the processor ----------------------------------------------------------------------------


class LiveProcessor:
    """Turn camera frames into annotated frames: detect now and then, track, predict, smooth, draw.

    ``detector`` has ``detect(rgb) -> list[Detection]`` (model.face_detect.FaceDetector);
    ``predictor`` maps (N, S, S, 3) uint8 faces to HeadOutputs (model.inference.Predictor).
    ``background=True`` runs detection on a thread (the app); False detects inline on the
    frame that needs it (deterministic, for tests). One processor serves one stream:
    ``process`` is called from one thread at a time; ``stats``, ``snapshot`` and
    ``last_frame`` may be read from any thread.
    """

    def __init__(self, detector: Detector, predictor: Predictor, config: LiveConfig | None = None, *,
                 background: bool = True, clock=time.monotonic):
        self.detector = detector
        self.predictor = predictor
        # The predictor's read-out calibration (interval widths), applied to the smoothed distributions.
        self._calibration = getattr(predictor, "calibration", None) or Calibration()
        self.config = config or LiveConfig()
        self.background = background
        self.clock = clock
        self.stats = LiveStats(clock=clock)
        self.tracks: list[Track] = []
        self.frame_number = 0
        self.frame_size: tuple[int, int] | None = None  # (height, width) of the latest frame
        self.detection_error: str | None = None
        self._worker = DetectionWorker(detector) if background else None
        self._last_detect_request = -(10**9)
        self._lost_since_request = False
        self._empty_detections = 0  # detections in a row that found nothing
        self._close_face = False  # the last detection that found a face found a close one
        self._greys: dict[int, np.ndarray] = {}  # frame number -> grey frame awaiting its detection
        self._last: tuple[np.ndarray, list[LiveFace]] | None = None
        self._last_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------

    def latest(self, frames: list) -> Any:
        """The newest of the frames that queued up while the last one was processed; the rest count as dropped."""
        self.stats.add_received(len(frames))
        if len(frames) > 1:
            self.stats.add_dropped(len(frames) - 1)
        return frames[-1] if frames else None

    def process(self, frame: np.ndarray, age_s: float = 0.0) -> LiveFrame | None:
        """Annotate one HxWx3 uint8 RGB frame that is ``age_s`` seconds old; None (dropped) when too old."""
        if age_s > self.config.max_frame_age:
            self.stats.add_dropped()
            return None
        last = self.stats.last_frame_at
        if last is not None and self.clock() - last > self.config.new_stream_after:
            self.tracks = []  # a new stream (or a long stall): old boxes mean nothing now
            self._last_detect_request = -(10**9)
            self._empty_detections, self._close_face = 0, False
        t0 = time.perf_counter()
        if self.frame_size is not None and frame.shape[:2] != self.frame_size:
            self._rescale(frame.shape[:2])  # WebRTC lowers the resolution when a side is short of CPU
        self.frame_size = frame.shape[:2]
        self.frame_number += 1
        number = self.frame_number
        grey = to_grey(frame)
        timings = dict.fromkeys(STAGES, 0.0)

        job = self._worker.collect() if self._worker is not None else None
        if job is not None:
            self._apply_detection(job.frame_number, self._greys.pop(job.frame_number, None), job)
        t1 = time.perf_counter()
        self._track(grey, number)
        t2 = time.perf_counter()
        timings["track"] = (t2 - t1) + (t1 - t0)
        if self._detection_due(number):
            self._request_detection(number, frame, grey)
        t3 = time.perf_counter()
        timings["detect"] = t3 - t2  # inline detection only; the background thread costs ~0 here

        faces, align_s, model_s = self._predict(frame)
        t4 = time.perf_counter()
        image = draw(frame, faces)
        t5 = time.perf_counter()
        timings.update(align=align_s, model=model_s, draw=t5 - t4, total=t5 - t0)
        latency = age_s + timings["total"]
        self.stats.add_frame(timings, latency, len(faces))
        with self._last_lock:
            self._last = (frame, faces)
        return LiveFrame(image=image, faces=faces, timings=timings, latency=latency, frame_number=number)

    def last_frame(self) -> tuple[np.ndarray, list[LiveFace]] | None:
        """The latest processed (unannotated) frame and its faces, for "freeze"."""
        with self._last_lock:
            return self._last

    def close(self, timeout: float = 30.0) -> None:
        """Let a running background detection finish (a process must not exit in the middle of one)."""
        if self._worker is not None:
            self._worker.collect(wait=timeout)

    def wait_for_detection(self, timeout: float = 30.0) -> bool:
        """Tests: block until a background detection finishes and apply it on the next frame."""
        if self._worker is None or not self._worker.busy:
            return False
        return self._worker.wait(timeout)

    # -- detection ---------------------------------------------------------------------------

    def _detection_due(self, number: int) -> bool:
        if self._worker is not None and self._worker.pending:
            return False
        since = number - self._last_detect_request
        if not self.tracks or self._lost_since_request:
            return since >= max(1, self.config.detect_every // 2)
        return since >= self.config.detect_every

    def _pad_retry_due(self) -> bool:
        """Whether the next detection may try a padded copy when it finds nothing (LiveConfig)."""
        every = max(1, self.config.pad_retry_every)
        return self._empty_detections % every == 0 or (self._close_face and self._empty_detections < every)

    def _request_detection(self, number: int, frame: np.ndarray, grey: np.ndarray) -> None:
        self._last_detect_request = number
        self._lost_since_request = False
        retry = self._pad_retry_due()
        if self._worker is not None:
            self._greys = {number: grey}
            self._worker.submit(number, frame, retry)
            return
        job = _DetectionJob(number, frame, retry)
        job.run(self.detector)
        self._apply_detection(number, grey, job)  # boxes are this frame's: nothing to track

    def _note_found(self, detections: list, frame_size: tuple[int, int]) -> None:
        if not detections:
            self._empty_detections += 1
            return
        self._empty_detections = 0
        side = max(max(d.box[2], d.box[3]) for d in detections)
        self._close_face = side >= self.config.close_face * min(frame_size)

    def _apply_detection(self, det_number: int, grey: np.ndarray | None, job: _DetectionJob) -> None:
        """Merge detections made on frame ``det_number`` into the tracks (IoU there, not now)."""
        self.stats.add_detection(job.seconds)
        if job.error is not None:
            self.detection_error = f"{type(job.error).__name__}: {job.error}"
            return
        self.detection_error = None
        self._note_found(job.detections, job.frame.shape[:2])
        if grey is None or grey.shape != self.frame_size:  # detected before a resolution change
            return
        cfg = self.config
        det_boxes = [np.array(d.box, np.float64) for d in job.detections]
        then = [t.history.get(det_number, t.box) for t in self.tracks]
        pairs, lost, new = match_boxes(then, det_boxes, cfg.iou_match)
        # A face the tracker lost (it jumped, or frames were skipped) keeps its number when it
        # is detected again nearby: second pass, lost tracks by centre distance in box widths.
        for i, j in match_nearby([then[i] for i in lost], [det_boxes[j] for j in new], cfg.rejoin_distance,
                                 [not self.tracks[i].visible for i in lost]):
            pairs.append((lost[i], new[j]))
        matched_tracks, matched_dets = {i for i, _ in pairs}, {j for _, j in pairs}
        lost = [i for i in lost if i not in matched_tracks]
        new = [j for j in new if j not in matched_dets]
        keep: list[Track] = []
        for i, j in pairs:
            track, det = self.tracks[i], job.detections[j]
            moved = track.box[:2] - then[i][:2]  # how far the face went since the detected frame
            if self._refresh(track, grey, det, det_number, moved):
                keep.append(track)
        for i in lost:
            track = self.tracks[i]
            track.undetected += 1
            if track.undetected < cfg.max_undetected:
                keep.append(track)
        taken = {t.number for t in keep}
        for j in new:
            number = next(n for n in range(1, len(taken) + 2) if n not in taken)
            track = Track(number=number, box=det_boxes[j], landmarks=np.zeros((5, 2)),
                          template=np.zeros((1, 1), np.uint8), scale=1.0, template_frame=det_number)
            if self._refresh(track, grey, job.detections[j], det_number, np.zeros(2)):
                keep.append(track)
                taken.add(number)
        self.tracks = sorted(keep, key=lambda t: t.number)

    def _refresh(self, track: Track, grey: np.ndarray, det, det_number: int, moved: np.ndarray) -> bool:
        """Take box, landmarks and template from a detection; False when its box is unusable."""
        box = np.array(det.box, np.float64)
        patch = _face_patch(grey, box, self.config.template_width)
        if patch is None:
            return False
        track.template, track.scale = patch
        track.template_frame = det_number
        track.box = box + np.array([moved[0], moved[1], 0.0, 0.0])
        track.landmarks = landmarks_array(det.landmarks) + moved
        track.history = {det_number: box}
        track.undetected = 0
        track.missed = 0
        track.catching_up = det_number != self.frame_number
        return True

    # -- tracking ----------------------------------------------------------------------------

    def _rescale(self, size: tuple[int, int]) -> None:
        """Carry the tracks over to a new frame size (same view, other resolution)."""
        ry, rx = size[0] / self.frame_size[0], size[1] / self.frame_size[1]
        for track in self.tracks:
            track.box = track.box * np.array([rx, ry, rx, ry])
            track.landmarks = track.landmarks * np.array([rx, ry])
            track.scale = track.scale / rx  # the template keeps its pixels; frame pixels changed size
            track.history = {}

    def _track(self, grey: np.ndarray, number: int) -> None:
        cfg = self.config
        keep = []
        for track in self.tracks:
            if track.template_frame != number:
                margin = cfg.catch_up_margin if track.catching_up else cfg.search_margin
                box, score = locate(grey, track.template, track.scale, track.box, margin)
                track.catching_up = False
                if score >= cfg.track_min_score:
                    track.landmarks = track.landmarks + (box[:2] - track.box[:2])
                    track.box = box
                    track.missed = 0
                else:
                    track.missed += 1
                    self._lost_since_request = True
                    if track.missed > cfg.max_missed:
                        continue
            track.history[number] = track.box.copy()
            for old in [n for n in track.history if n < number - 90]:
                del track.history[old]
            keep.append(track)
        self.tracks = keep

    # -- prediction --------------------------------------------------------------------------

    def _predict(self, frame: np.ndarray) -> tuple[list[LiveFace], float, float]:
        t0 = time.perf_counter()
        visible, inputs = [], []
        for track in self.tracks:
            if not track.visible:
                continue
            try:
                aligned = align_face(frame, track.landmarks, input_size=self.predictor.input_size)
            except ValueError:  # degenerate landmarks
                continue
            visible.append(track)
            inputs.append(aligned.face_input)
        t1 = time.perf_counter()
        if not inputs:
            return [], t1 - t0, 0.0
        outputs = self.predictor(np.stack(inputs))  # one batched call for every face of the frame
        t2 = time.perf_counter()
        w = self.config.smoothing
        h_img, w_img = frame.shape[:2]
        for i, track in enumerate(visible):
            track.gender = ema(track.gender, outputs.gender[i], w)
            track.ethnicity = ema(track.ethnicity, outputs.ethnicity[i], w)
            track.age_dist = ema(track.age_dist, outputs.age_dist[i], w)
        # one read-out of every face's smoothed distribution (row by row, as the calibration works)
        u = np.full(len(visible), np.nan) if outputs.unfamiliarity is None else outputs.unfamiliarity
        ages, intervals = self._calibration.age_readout(np.stack([t.age_dist for t in visible]), u)
        faces = []
        for i, track in enumerate(visible):
            age = float(ages[i])
            low, high = (float(v) for v in intervals[i])
            g, e = int(np.argmax(track.gender)), int(np.argmax(track.ethnicity))
            x, y, bw, bh = track.box
            x0, y0 = int(np.clip(round(x), 0, w_img - 1)), int(np.clip(round(y), 0, h_img - 1))
            box = (x0, y0, int(min(round(bw), w_img - x0)), int(min(round(bh), h_img - y0)))
            faces.append(LiveFace(number=track.number, box=box, age=age, age_interval=(low, high),
                                  gender=GENDERS[g], gender_probability=float(track.gender[g]),
                                  ethnicity=ETHNICITIES[e], ethnicity_probability=float(track.ethnicity[e])))
        return faces, t1 - t0, t2 - t1
