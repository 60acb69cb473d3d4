"""Command line: analyse photos (files or folders) with the same pipeline as the app.

    python -m model.predict photo.jpg holiday/            # readable table
    python -m model.predict --json photo.jpg > faces.json  # one JSON list, an object per image
    python -m model.predict --gradcam-dir cams/ photo.jpg  # also Grad-CAM overlays + heat maps

A bad file gives an ``error`` entry (and a line on stderr) and the run goes on; files
of a folder that are not images are listed on stderr as skipped, never silently. A
crowd is not refused: the largest ``--max-faces`` faces are analysed and the output
says how many were found. Exit status: 0 every file was analysed (finding no face is
not a failure); 3 some files failed, the others were analysed; 1 nothing could be
analysed (every file failed, no image given, or the model is missing); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from model.image_io import IMAGE_SUFFIXES
from model.results import photo_notes
from model.settings import MAX_FACES

#: Exit statuses (documented in the README).
EXIT_OK = 0
EXIT_NOTHING_ANALYSED = 1
EXIT_USAGE = 2  # argparse's own
EXIT_SOME_FAILED = 3

#: Keys of a face in ``--json`` output.
JSON_FACE_KEYS: tuple[str, ...] = (
    "box",
    "detection_confidence",
    "age",
    "age_interval",
    "gender",
    "gender_probability",
    "ethnicity",
    "ethnicity_probabilities",
    "unfamiliarity",
    "unfamiliar",
)


def collect_paths(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, not recursive)."""
    return collect_inputs(paths)[0]


def collect_inputs(paths: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(files to analyse, (path, reason) of what a folder held that is not analysed).

    Files named on the command line are always tried, whatever their suffix, and a
    missing path is kept so that it gets its own error entry. In a folder, files
    with an image suffix (``IMAGE_SUFFIXES``) are taken; other files and sub-folders
    are returned as skipped, with the reason, so the caller can list them.
    """
    out: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            out.append(path)
            continue
        try:
            children = sorted(path.iterdir())
        except OSError as exc:
            skipped.append((path, f"folder could not be read ({exc.strerror or exc})"))
            continue
        for child in children:
            if child.is_dir():
                skipped.append((child, "a sub-folder (folders are not searched recursively)"))
            elif child.suffix.lower() in IMAGE_SUFFIXES:
                out.append(child)
            else:
                kind = f"'{child.suffix}'" if child.suffix else "no suffix"
                skipped.append((child, f"not an image type this tool reads ({kind}; it reads "
                                       f"{', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)})"))
    return out, skipped


def face_json(face) -> dict[str, Any]:
    """The ``--json`` view of a FaceResult (plain Python numbers)."""
    full = face.to_dict()
    return {key: full[key] for key in JSON_FACE_KEYS}


def write_gradcam(analyzer, photo, faces: list, stem: str, out_dir: Path) -> list[Path]:
    """``S_face{i}_{head}.png`` (overlay) and ``.npy`` (heat map in photo pixels) per face and head."""
    from model.heatmap_draw import save_explanation
    from model.labels import HEAD_NAMES

    written = []
    for face in faces:  # the three heads of a face in one batched Grad-CAM call
        explanations = analyzer.explain_heads(photo, face, [(head, None) for head in HEAD_NAMES])
        for explanation in explanations.values():
            written += save_explanation(explanation, out_dir, stem, face.index)
    return written


def gradcam_stems(paths: list[Path]) -> list[str]:
    """File stems for the Grad-CAM files, made unique: a/me.jpg and b/me.png give me, me-2.

    Two inputs with one stem would otherwise overwrite each other's heat maps.
    """
    taken: set[str] = set()  # case-folded: Me.jpg and me.png collide on macOS and Windows disks
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem.casefold() in taken:  # also skips a real file already called me-2
            n += 1
            stem = f"{path.stem}-{n}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def analyze_file(analyzer, path: Path, gradcam_dir: Path | None, stem: str | None = None,
                 max_faces: int = MAX_FACES) -> dict[str, Any]:
    """One image -> ``{"image", "faces", "faces_found", "frames", "error"}``; never raises for a bad image.

    ``faces_found`` is how many faces were detected (more than ``len(faces)`` when only
    the ``max_faces`` largest were analysed); ``frames`` how many frames the file holds
    (only the first is analysed). ``stem`` names the Grad-CAM files (default: the file's stem).
    """
    from model.analyzer import ImageError, TooManyFacesError

    entry: dict[str, Any] = {"image": str(path), "faces": [], "faces_found": 0, "frames": 1, "error": None}
    try:
        result = analyzer.analyze_photo(path, largest=max_faces)
        photo, faces = result.photo, result.faces
        entry.update(faces_found=int(result.faces_found), frames=int(result.frames))
    except (ImageError, TooManyFacesError) as exc:
        entry["error"] = str(exc)
        return entry
    except Exception as exc:  # noqa: BLE001 - one broken file must not stop a batch
        entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry
    entry["faces"] = [face_json(f) for f in faces]
    if gradcam_dir is not None and faces:
        try:
            write_gradcam(analyzer, photo, faces, stem or path.stem, gradcam_dir)
        except Exception as exc:  # noqa: BLE001 - the analysis stands; say what failed and go on
            print(f"warning: Grad-CAM for {path} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return entry


def format_table(entries: list[dict[str, Any]]) -> str:
    """A readable per-face table."""
    from model.labels import ETHNICITY_DISPLAY

    lines = [f"{'image':32s} {'face':>4s}  {'box (x,y,w,h)':20s} {'age (80% range)':18s} {'gender':14s} ethnicity"]
    for entry in entries:
        name = entry["image"] if len(entry["image"]) <= 32 else "..." + entry["image"][-29:]
        if entry["error"]:
            lines.append(f"{name:32s} error: {entry['error']}")
            continue
        if not entry["faces"]:
            lines.append(f"{name:32s} no face found" + "".join(f" ({note})" for note in entry_notes(entry)))
            continue
        for i, face in enumerate(entry["faces"]):
            box = ",".join(str(v) for v in face["box"])
            low, high = face["age_interval"]
            age = f"{face['age']:.0f} ({low:.0f}-{high:.0f})"
            gender = f"{face['gender']} {face['gender_probability']:.0%}"
            eth = face["ethnicity"]
            eth_text = f"{ETHNICITY_DISPLAY.get(eth, eth)} {face['ethnicity_probabilities'][eth]:.0%}"
            flag = (f"  ! unlike the training photos (unfamiliarity {face['unfamiliarity']:.1f})"
                    if face.get("unfamiliar") else "")
            lines.append(f"{name:32s} {i:4d}  {box:20s} {age:18s} {gender:14s} {eth_text}{flag}")
        for note in entry_notes(entry):
            lines.append(f"{'':32s} note: {note}")
    return "\n".join(lines)


def entry_notes(entry: dict[str, Any]) -> list[str]:
    """What a reader should know about an analysed image: faces left out, frames not looked at."""
    return photo_notes(len(entry["faces"]), entry.get("faces_found", 0), entry.get("frames", 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.predict",
        description="Estimate age, gender and ethnicity for every face in photos.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--json", action="store_true", help="print one JSON list (an object per image)")
    parser.add_argument("--gradcam-dir", type=Path, default=None, metavar="DIR",
                        help="also write Grad-CAM overlays (.png) and heat maps (.npy) per face and head")
    parser.add_argument("--max-faces", type=_positive_int, default=MAX_FACES, metavar="N",
                        help=f"analyse at most N faces per photo, the largest (default {MAX_FACES}); "
                        "the output says how many were found")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: FACELENS_MODEL or the shipped one)")
    parser.epilog = ("exit status: 0 every file analysed; 3 some files failed (listed on stderr), the others were "
                     "analysed; 1 nothing could be analysed; 2 bad arguments")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None, analyzer=None) -> int:
    """CLI entry point; ``analyzer`` may be injected (tests) instead of loading ``--model``."""
    args = build_parser().parse_args(argv)
    paths, skipped = collect_inputs(args.paths)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not paths:
        print("no image files found in the given paths", file=sys.stderr)
        return EXIT_NOTHING_ANALYSED
    if analyzer is None:
        from model.analyzer import FaceAnalyzer

        try:
            analyzer = FaceAnalyzer(args.model)
        except FileNotFoundError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_NOTHING_ANALYSED
    from tqdm import tqdm

    entries = []
    stems = gradcam_stems(paths)
    for path, stem in zip(tqdm(paths, desc="photos", unit="img", file=sys.stderr, disable=len(paths) < 2), stems,
                          strict=True):
        if args.gradcam_dir is not None and stem != path.stem:
            print(f"note: Grad-CAM files of {path} are named {stem}_face*", file=sys.stderr)
        entries.append(analyze_file(analyzer, path, args.gradcam_dir, stem, max_faces=args.max_faces))
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        print(format_table(entries))
    return exit_status(entries)


def exit_status(entries: list[dict[str, Any]]) -> int:
    """0 all analysed, 3 some failed, 1 none analysed; the failures are listed on stderr."""
    failed = [entry for entry in entries if entry["error"] is not None]
    if failed:
        print(f"{len(failed)} of {len(entries)} file{'s' if len(entries) != 1 else ''} could not be analysed:",
              file=sys.stderr)
        for entry in failed:
            print(f"  {entry['image']}: {entry['error']}", file=sys.stderr)
    if not failed:
        return EXIT_OK
    return EXIT_SOME_FAILED if len(failed) < len(entries) else EXIT_NOTHING_ANALYSED


if __name__ == "__main__":
    raise SystemExit(main())
