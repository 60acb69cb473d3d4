"""Run every labelled image through the app's own detector and aligner once, and cache
the aligned faces.

    python -m training.prepare --source utkface=../shared/data/utkface/UTKFace \
        --source celeba=../shared/data/celeba --out runs/prepared --workers 2

A face for training then takes exactly the path a user's photo takes
(``image_io.load_image`` -> ``FaceDetector`` -> ``align_face``), so the model learns
the framing and landmark noise it will meet in the app. The biggest confident face
of an image is taken (whole photos may show bystanders). Results are written in
chunks (``OUT/<source>/part_<k>.npz``) keyed by the chunk's content hashes, so an
interrupted run resumes where it stopped and a changed folder only redoes what
changed. What failed, and why, is counted in ``OUT/<source>/report.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model.settings import INPUT_SIZE
from training.sources import FaceRecord, SourceReport, read_source

#: Bump when the detection/alignment path changes, so cached chunks are redone.
PREPARE_VERSION = 1
CHUNK = 400
FAILURE_REASONS: tuple[str, ...] = ("unreadable", "no face", "alignment failed")


@dataclass(frozen=True)
class SourceSpec:
    """``name=path[,weight=W][,group=age][,split=80/10/10]`` from the command line."""

    name: str
    path: str
    weight: float = 1.0
    group_by: str = "identity"
    fractions: tuple[float, float, float] | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        if "=" not in text:
            raise ValueError(f"source must look like name=path[,weight=W], got {text!r}")
        name, rest = text.split("=", 1)
        path, *options = rest.split(",")
        kwargs: dict = {}
        for option in options:
            key, _, value = option.partition("=")
            if key == "weight":
                kwargs["weight"] = float(value)
            elif key == "group":
                kwargs["group_by"] = value
            elif key == "split":
                parts = [float(v) for v in value.split("/")]
                if len(parts) != 3 or abs(sum(parts) - 100.0) > 1e-6:
                    raise ValueError(f"split must be three percentages summing to 100, got {value!r}")
                kwargs["fractions"] = tuple(p / 100.0 for p in parts)
            else:
                raise ValueError(f"unknown source option {key!r} in {text!r}")
        return cls(name.strip(), path.strip(), **kwargs)

    def read(self) -> tuple[list[FaceRecord], SourceReport]:
        options: dict = {}
        if self.group_by != "identity":
            options["group_by"] = self.group_by
        if self.fractions is not None:
            options["fractions"] = self.fractions
        return read_source(self.path, self.name, **options)


# ---------------------------------------------------------------- worker side
_DETECTOR = None


def _init_worker(threads: int, detector=None) -> None:
    """Build this process's detector (a pool worker's, or the caller's own when given)."""
    global _DETECTOR
    if detector is not None:
        _DETECTOR = detector
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already running in this process: keep its threads
        pass
    from model.face_detect import FaceDetector

    _DETECTOR = FaceDetector(max_faces=1000)


def align_largest_face(detector, image, input_size: int) -> tuple[np.ndarray | None, str | None, int]:
    """(face_input, failure reason, faces found) for one image (path, bytes or array)."""
    from model.align import align_face
    from model.image_io import ImageError, load_image

    try:
        photo = load_image(image)
    except ImageError:
        return None, "unreadable", 0
    detections = detector.detect(photo)
    if not detections:
        return None, "no face", 0
    biggest = max(detections, key=lambda d: d.box[2] * d.box[3])
    try:
        face = align_face(photo, biggest.landmarks, input_size=input_size)
    except ValueError:
        return None, "alignment failed", len(detections)
    return face.face_input, None, len(detections)


def _prepare_chunk(task: tuple[list, int]) -> dict:
    items, input_size = task
    faces = np.zeros((len(items), input_size, input_size, 3), np.uint8)
    reasons = np.zeros(len(items), np.int8)  # 0 ok, else 1 + FAILURE_REASONS index
    several = 0
    for i, item in enumerate(items):
        face, reason, found = align_largest_face(_DETECTOR, item, input_size)
        several += int(found > 1)
        if face is None:
            reasons[i] = 1 + FAILURE_REASONS.index(reason)
        else:
            faces[i] = face
    return {"faces": faces, "reasons": reasons, "several": several}


# ---------------------------------------------------------------- main side
def _chunk_key(records: list[FaceRecord], input_size: int) -> str:
    digest = hashlib.sha1(f"v{PREPARE_VERSION}-{input_size}".encode())
    for r in records:
        digest.update(r.digest.encode())
    return digest.hexdigest()[:12]


def _crop_size(path: Path) -> int | None:
    """Side of the crops in a chunk file, read from the array header alone (None if unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("faces.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            return int(read(f)[0][1])
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile):
        return None


def _item(record: FaceRecord):
    return record.pixels if record.pixels is not None else str(record.path)


def prepare_source(
    spec: SourceSpec, out_dir: Path, input_size: int = INPUT_SIZE, workers: int = 1, progress: bool = True,
    detector=None,
) -> dict:
    """Align every image of one source (resuming finished chunks); returns the report.

    ``detector`` (anything with ``detect(photo) -> list[Detection]``) replaces MTCNN
    and runs in this process."""
    from tqdm import tqdm

    records, read_report = spec.read()
    folder = out_dir / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]
    paths = [folder / f"part_{k:05d}_{_chunk_key(c, input_size)}.npz" for k, c in enumerate(chunks)]
    todo = [(k, c) for k, (c, p) in enumerate(zip(chunks, paths)) if not p.is_file()]
    bar = tqdm(total=len(records), desc=f"align {spec.name}", unit="img", disable=not progress,
               file=sys.stderr, mininterval=2.0, initial=sum(len(c) for c in chunks) - sum(len(c) for _, c in todo))
    tasks = [([_item(r) for r in c], input_size) for _, c in todo]
    if todo:
        if workers > 1 and detector is None:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(1,)) as pool:
                for (k, c), result in zip(todo, pool.imap(_prepare_chunk, tasks)):
                    _save_chunk(paths[k], result)
                    bar.update(len(c))
        else:
            _init_worker(2, detector)
            for (k, c), task in zip(todo, tasks):
                _save_chunk(paths[k], _prepare_chunk(task))
                bar.update(len(c))
    bar.close()
    for stale in folder.glob("part_*.npz"):
        # Chunks of another crop size stay: one folder can hold the crops of several sizes.
        if stale not in paths and _crop_size(stale) in (input_size, None):
            stale.unlink()
    reasons = np.concatenate([np.load(p)["reasons"] for p in paths]) if paths else np.zeros(0, np.int8)
    several = sum(int(np.load(p)["several"]) for p in paths)
    report = {
        "source": spec.name,
        "path": spec.path,
        "read": asdict(read_report),
        "images": len(records),
        "aligned": int((reasons == 0).sum()),
        "failed": {name: int((reasons == i + 1).sum()) for i, name in enumerate(FAILURE_REASONS)},
        "several_faces_took_largest": several,
        "input_size": input_size,
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _save_chunk(path: Path, result: dict) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, faces=result["faces"], reasons=result["reasons"], several=result["several"])
    tmp.replace(path)


def load_prepared(spec: SourceSpec, out_dir: Path, input_size: int = INPUT_SIZE,
                  split: str | None = None) -> tuple[list[FaceRecord], np.ndarray]:
    """(records whose face aligned, their faces) from a finished :func:`prepare_source`;
    only one split's when ``split`` is train / val / test."""
    records, _ = spec.read()
    folder = out_dir / spec.name
    chunks = [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]
    kept: list[FaceRecord] = []
    faces: list[np.ndarray] = []
    for k, chunk in enumerate(chunks):
        path = folder / f"part_{k:05d}_{_chunk_key(chunk, input_size)}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run python -m training.prepare for source {spec.name!r} first")
        with np.load(path) as data:
            ok = data["reasons"] == 0
            faces.append(data["faces"][ok])
        kept.extend(r for r, good in zip(chunk, ok) if good)
    stacked = np.concatenate(faces) if faces else np.zeros((0, input_size, input_size, 3), np.uint8)
    if split not in (None, "all"):
        here = np.array([r.split == split for r in kept], bool)
        return [r for r, k in zip(kept, here) if k], stacked[here]
    return kept, stacked


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", required=True, type=SourceSpec.parse,
                   help="name=path[,weight=W][,group=age][,split=80/10/10] (repeatable)")
    p.add_argument("--out", required=True, help="folder for the aligned-face chunks")
    p.add_argument("--input-size", type=int, default=INPUT_SIZE)
    p.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    reports = []
    for spec in args.source:
        try:
            reports.append(prepare_source(spec, Path(args.out), args.input_size, args.workers, not args.quiet))
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {spec.name}: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
