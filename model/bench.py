"""Benchmarks of the face pipeline and of Grad-CAM (figures printed; not a test).

    python -m model.bench [--model PATH] [--repeats 30]
    python -m model.bench --gradcam [--model PATH] [--repeats 5] [--methods gradcam gradcam++]
    python -m model.bench --video [--seconds 20]   # the live loop (model.live_bench)

On a 640x480 JPEG of scikit-image's astronaut portrait (one face) it reports the
median time per stage (decode, detect, align, model, total), the same photo through
a bare ``MTCNN().detect_faces`` in the same run (the floor: the pipeline should
cost at most 1.3x that), the model step per face for batches of 1 and 8, a
12-megapixel photo (downscaled before detection), cold start (import + load +
first photo, in a fresh subprocess) and peak memory. Other processes on the
machine (e.g. a training run) inflate every figure; the load average is printed.

``--gradcam`` times MTCNN detection on the same photo against explaining all three
heads of its face, one head per call and all heads in one batched call, per method.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from model.bench_common import bench_photo, jpeg_bytes, median_ms, median_time
from model.results import CAM_METHODS

#: Budgets the pipeline is held to: at most 1.3x a bare MTCNN call on the same photo (the
#: detector is the floor), a model step that keeps a webcam frame interactive, a cold
#: start short enough for a first visit.
TARGET_RATIO = 1.3
TARGET_MODEL_MS_PER_FACE = 15.0
TARGET_COLD_START_S = 10.0
TARGET_READOUT_MS_PER_FACE = 2.0

# Peak memory from /proc's VmHWM: Linux carries ru_maxrss over exec, so a child started by
# a big benchmark process would report the parent's peak.
_COLD_START_CODE = """
import re, sys, time
t0 = time.perf_counter()
from model import FaceAnalyzer
analyzer = FaceAnalyzer({model!r})
t1 = time.perf_counter()
faces = analyzer.analyze(sys.stdin.buffer.read())
t2 = time.perf_counter()
with open("/proc/self/status") as status:
    peak_kib = re.search(r"VmHWM:\\s*(\\d+)", status.read()).group(1)
print(t1 - t0, t2 - t1, len(faces), peak_kib)
"""


def cold_start(model: Path | None, photo_jpeg: bytes) -> tuple[float, float, float, int, int]:
    """(wall s incl. interpreter, import+load s, first analyze s, faces, peak RSS KiB) in a fresh process."""
    code = _COLD_START_CODE.format(model=None if model is None else str(model))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], input=photo_jpeg, capture_output=True, env=env, check=True
    )
    wall = time.perf_counter() - t0
    load, first, faces, rss = proc.stdout.decode().split()[-4:]
    return wall, float(load), float(first), int(faces), int(rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model file (default: FACELENS_MODEL or shipped)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 30; 5 with --gradcam)")
    parser.add_argument("--gradcam", action="store_true", help="time Grad-CAM of all three heads against MTCNN detection")
    parser.add_argument("--methods", nargs="+", default=list(CAM_METHODS), choices=list(CAM_METHODS),
                        help="--gradcam: saliency methods to time")
    parser.add_argument("--video", action="store_true", help="benchmark the live video loop instead")
    from model import live_bench

    live_bench.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.video:
        return live_bench.main(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.gradcam:
        print_gradcam_bench(args.model, args.repeats or 5, args.methods)
        return 0
    args.repeats = args.repeats or 30

    import resource

    from mtcnn import MTCNN

    from model.analyzer import FaceAnalyzer

    photo = bench_photo()
    data = jpeg_bytes(photo)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other work inflates figures)")
    analyzer = FaceAnalyzer(args.model)
    bare = MTCNN()
    bare.detect_faces(photo)  # trace once, like the analyzer's warm-up

    # Interleave the two, alternating which goes first, so background load hits both alike.
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "align", "model", "total")}
    bare_times: list[float] = []
    faces = []

    def run_bare() -> None:
        t0 = time.perf_counter()
        bare.detect_faces(photo)
        bare_times.append(time.perf_counter() - t0)

    for i in range(args.repeats):
        if i % 2 == 0:
            run_bare()
        faces = analyzer.analyze(data)
        for key in stages:
            stages[key].append(analyzer.last_timings[key])
        if i % 2 == 1:
            run_bare()
    print(f"\n640x480 JPEG, {len(faces)} face(s), {args.repeats} runs, median (min) ms, flip_tta={analyzer.flip_tta}:")
    for key, values in stages.items():
        print(f"  {key:7s} {median_ms(values):7.1f}  ({1000 * min(values):.1f})")
    floor = median_ms(bare_times)
    print(f"  bare MTCNN().detect_faces on the same photo: {floor:.1f}  ({1000 * min(bare_times):.1f})")
    print(f"  pipeline / bare MTCNN = {median_ms(stages['total']) / floor:.2f} by medians, "
          f"{min(stages['total']) / min(bare_times):.2f} by minima (target <= {TARGET_RATIO})")

    from model.inference import ENGINES, Predictor

    face = faces[0].face_input if faces else np.zeros((analyzer.input_size, analyzer.input_size, 3), np.uint8)
    engines = [analyzer.predictor.engine] + [e for e in ENGINES if e != analyzer.predictor.engine]
    for engine in engines:
        for flip in (analyzer.flip_tta, not analyzer.flip_tta):
            # Other settings keep the read-out calibration, so every figure includes its cost.
            predictor = (analyzer.predictor if (engine, flip) == (analyzer.predictor.engine, analyzer.flip_tta)
                         else Predictor(analyzer.model, flip_tta=flip, calibration=analyzer.predictor.calibration,
                                        engine=engine))
            for n in (1, 8):
                batch = np.repeat(face[None], n, axis=0)
                ms = 1000.0 * median_time(lambda batch=batch, predictor=predictor: predictor(batch), args.repeats)
                print(f"  model step ({engine}, flip_tta={flip}), batch of {n}: {ms:.1f} ms = {ms / n:.1f} ms "
                      f"per face (target <= {TARGET_MODEL_MS_PER_FACE:.0f})")
    if analyzer.predictor.engine == "litert":
        from model.litert import convert

        t0 = time.perf_counter()
        convert(analyzer.predictor.network)
        print(f"  LiteRT conversion (once per model and machine, then cached): {time.perf_counter() - t0:.1f} s")

    # The read-out calibration (unfamiliarity, age prior, interval, temperatures) on its own:
    # it runs on the features the model call already returned, for every face, live path included.
    calibration = analyzer.predictor.calibration
    for n in (1, 8):
        raw = analyzer.predictor.raw(np.repeat(face[None], n, axis=0))
        ms = 1000.0 * median_time(lambda raw=raw: analyzer.predictor.outputs(raw), args.repeats)
        measured = "with" if calibration.familiarity is not None else "without (no calibration file)"
        print(f"  read-out {measured} unfamiliarity, batch of {n}: {ms:.2f} ms = {ms / n:.2f} ms per face "
              f"(target <= {TARGET_READOUT_MS_PER_FACE:.0f})")

    import cv2

    big = cv2.resize(photo, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    big_jpeg = jpeg_bytes(big)
    big_stages: dict[str, list[float]] = {k: [] for k in stages}
    for _ in range(max(3, args.repeats // 3)):
        big_faces = analyzer.analyze(big_jpeg)
        for key in big_stages:
            big_stages[key].append(analyzer.last_timings[key])
    print(f"\n4000x3000 JPEG ({len(big_jpeg) / 1e6:.1f} MB), {len(big_faces)} face(s), detection on a downscaled copy:")
    print("  " + "  ".join(f"{k} {median_ms(v):.0f} ms" for k, v in big_stages.items()))

    wall, load, first, n_faces, rss = cold_start(args.model or analyzer.model_path, data)
    print(f"\ncold start (fresh process): import + load {load:.1f} s (target <= {TARGET_COLD_START_S:.0f}), "
          f"first photo {1000 * first:.0f} ms, wall incl. interpreter {wall:.1f} s; {n_faces} face(s)")
    print(f"peak memory: {rss / 1024:.0f} MB (fresh process after one photo); "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (this benchmark process)")
    return 0


def gradcam_bench(model_path: Path | None, repeats: int, methods: Sequence[str]) -> dict[str, float]:
    """Seconds (medians) of MTCNN detection on :func:`bench_photo` (``"detect"``) and of
    explaining all three heads of its face per method: one head per call
    (``"<method> per head"``) and all heads batched (``"<method> batched"``), cold caches."""
    from mtcnn import MTCNN

    from model import settings
    from model.align import align_face
    from model.architecture import build_model, load_model
    from model.gradcam import GradCamExplainer
    from model.heatmap_draw import face_explanation, face_explanations
    from model.labels import HEAD_NAMES

    path = model_path or settings.model_path()
    model = load_model(path) if path.is_file() else build_model(settings.INPUT_SIZE)
    print(f"model: {path if path.is_file() else f'untrained (no file at {path})'}")
    photo = bench_photo()
    detector = MTCNN()
    out = {"detect": median_time(lambda: detector.detect_faces(photo), repeats)}
    detections = detector.detect_faces(photo)
    if not detections:
        raise RuntimeError("MTCNN found no face in the benchmark photo")
    aligned = align_face(photo, {k: tuple(map(float, v)) for k, v in detections[0]["keypoints"].items()})
    face = SimpleNamespace(index=0, face_input=aligned.face_input, crop_affine=aligned.crop_affine)  # a FaceLike
    explainer = GradCamExplainer(model)

    def per_head(method: str) -> None:
        explainer.clear_cache()
        for head in HEAD_NAMES:
            face_explanation(explainer, photo, face, head, method=method)

    def batched(method: str) -> None:
        explainer.clear_cache()
        face_explanations(explainer, photo, face, HEAD_NAMES, method=method)

    for method in methods:
        out[f"{method} per head"] = median_time(lambda m=method: per_head(m), repeats)
        out[f"{method} batched"] = median_time(lambda m=method: batched(m), repeats)
    return out


def print_gradcam_bench(model_path: Path | None, repeats: int, methods: Sequence[str]) -> None:
    seconds = gradcam_bench(model_path, repeats, methods)
    detect = seconds.pop("detect")
    print(f"photo: {bench_photo().shape[1]}x{bench_photo().shape[0]} astronaut, one face; "
          f"median of {repeats} runs after warm-up")
    print(f"MTCNN().detect_faces: {detect * 1000:7.1f} ms")
    for label, value in seconds.items():
        print(f"{label:20s}: {value * 1000:7.1f} ms  = {value / detect:4.2f} x detect")


if __name__ == "__main__":
    raise SystemExit(main())
