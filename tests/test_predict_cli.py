"""The predict CLI: JSON shape, readable table, folders, going on past bad files, Grad-CAM files."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import predict
from model.analyzer import EXPLAIN_CACHE_SIZE, FaceAnalyzer
from model.labels import ETHNICITIES
from model.lru import LRUCache

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def analyzer(untrained_model) -> FaceAnalyzer:
    return FaceAnalyzer(model=untrained_model)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    paths = {
        "astronaut": folder / "astronaut.jpg",
        "noise": folder / "noise.png",
        "broken": folder / "broken.jpg",
        "text": folder / "readme.png",
    }
    Image.fromarray(data.astronaut()).save(paths["astronaut"], quality=92)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(paths["noise"])
    paths["broken"].write_bytes(paths["astronaut"].read_bytes()[:3000])
    paths["text"].write_text("not an image")
    (folder / "ignored.txt").write_text("skipped: not an image suffix")
    return paths


@pytest.mark.slow
def test_json_output_has_one_entry_per_image_and_goes_on_past_bad_files(analyzer, photos, capsys):
    folder = photos["astronaut"].parent
    code = predict.main(["--json", str(folder), "/nonexistent/x.jpg"], analyzer=analyzer)
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == predict.EXIT_SOME_FAILED == 3
    by_name = {Path(e["image"]).name: e for e in out}
    assert set(by_name) == {"astronaut.jpg", "noise.png", "broken.jpg", "readme.png", "x.jpg"}
    for entry in out:
        assert set(entry) == {"image", "faces", "faces_found", "frames", "error"}
    # the folder's text file is listed with its reason, and every failure with its own
    assert "skipped " + str(folder / "ignored.txt") + ": not an image type this tool reads ('.txt'" in captured.err
    assert "3 of 5 files could not be analysed" in captured.err
    assert f"  {photos['broken']}: the image file is truncated" in captured.err
    good = by_name["astronaut.jpg"]
    assert good["error"] is None and len(good["faces"]) == 1
    face = good["faces"][0]
    assert set(face) == set(predict.JSON_FACE_KEYS)
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert face["gender"] in ("male", "female") and 0.5 <= face["gender_probability"] <= 1
    assert list(face["ethnicity_probabilities"]) == list(ETHNICITIES)
    assert by_name["noise.png"] == {"image": str(photos["noise"]), "faces": [], "faces_found": 0, "frames": 1,
                                    "error": None}
    assert "truncated" in by_name["broken.jpg"]["error"]
    assert "not an image" in by_name["readme.png"]["error"]
    assert "no such file" in by_name["x.jpg"]["error"]


@pytest.mark.slow
def test_exit_status_says_whether_anything_failed(analyzer, photos, capsys):
    assert predict.main(["--json", str(photos["broken"]), str(photos["text"])], analyzer=analyzer) == 1
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2 and "2 of 2 files could not be analysed" in captured.err
    assert predict.main(["--json", str(photos["noise"]), str(photos["astronaut"])], analyzer=analyzer) == 0
    assert "could not be analysed" not in capsys.readouterr().err  # readable, no face: not a failure
    assert predict.main([str(photos["astronaut"]), str(photos["text"])], analyzer=analyzer) == 3
    err = capsys.readouterr().err
    assert f"1 of 2 files could not be analysed:\n  {photos['text']}: the file is not an image" in err


@pytest.mark.slow
def test_table_output_is_readable(analyzer, photos, capsys):
    code = predict.main([str(photos["astronaut"]), str(photos["noise"]), str(photos["text"])], analyzer=analyzer)
    out = capsys.readouterr().out
    assert code == predict.EXIT_SOME_FAILED  # readme.png is not an image
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["image", "face"]
    assert any("astronaut.jpg" in line and ("male" in line or "female" in line) for line in lines)
    assert any("noise.png" in line and "no face found" in line for line in lines)
    assert any("readme.png" in line and "error" in line for line in lines)


@pytest.mark.slow
def test_gradcam_dir_writes_overlay_and_heatmap_per_face_and_head(analyzer, photos, tmp_path, monkeypatch, capsys):
    import model
    from model import analyzer as analyzer_module

    fake = types.ModuleType("model.gradcam")

    class FakeExplainer:
        def __init__(self, m):
            pass

    batches = []

    def explain_faces(explainer, photo, face, heads, targets, method="gradcam", alpha=0.45):
        batches.append(tuple(heads))
        heat = np.zeros(photo.shape[:2], np.float32)
        x, y, w, h = face.box
        heat[y : y + h, x : x + w] = 1.0
        return {head: types.SimpleNamespace(head=head, photo_heatmap=heat, overlay=photo.copy()) for head in heads}

    fake.GradCamExplainer = FakeExplainer
    monkeypatch.setattr(analyzer_module, "face_explanations", explain_faces)
    monkeypatch.setitem(sys.modules, "model.gradcam", fake)
    monkeypatch.setattr(model, "gradcam", fake, raising=False)
    monkeypatch.setattr(analyzer, "_explainer", None)
    monkeypatch.setattr(analyzer, "_explain_cache", LRUCache(EXPLAIN_CACHE_SIZE))

    out_dir = tmp_path / "cams"
    assert predict.main(["--json", "--gradcam-dir", str(out_dir), str(photos["astronaut"])], analyzer=analyzer) == 0
    capsys.readouterr()
    names = sorted(p.name for p in out_dir.iterdir())
    expected = sorted(f"astronaut_face0_{h}.{ext}" for h in ("age", "gender", "ethnicity") for ext in ("png", "npy"))
    assert names == expected
    assert batches == [("age", "gender", "ethnicity")]  # one batched Grad-CAM call for the face's three heads
    heat = np.load(out_dir / "astronaut_face0_age.npy")
    assert heat.shape == (512, 512) and heat.dtype == np.float32 and heat.max() == 1.0
    assert Image.open(out_dir / "astronaut_face0_gender.png").size == (512, 512)


@pytest.mark.slow
def test_gradcam_dir_with_the_real_gradcam_module(analyzer, photos, tmp_path, capsys):
    out_dir = tmp_path / "real"
    assert predict.main(["--gradcam-dir", str(out_dir), str(photos["astronaut"])], analyzer=analyzer) == 0
    capsys.readouterr()
    heat = np.load(out_dir / "astronaut_face0_ethnicity.npy")
    assert heat.shape == (512, 512) and 0.0 <= heat.min() and heat.max() <= 1.0
    assert np.asarray(Image.open(out_dir / "astronaut_face0_ethnicity.png")).shape == (512, 512, 3)


@pytest.mark.slow
def test_cli_runs_as_a_module_and_loads_a_model_file(untrained_model_path, photos):
    result = subprocess.run(
        [sys.executable, "-m", "model.predict", "--json", "--model", str(untrained_model_path), str(photos["astronaut"])],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (entry,) = json.loads(result.stdout)
    assert entry["error"] is None and len(entry["faces"]) == 1


def test_bad_arguments_and_empty_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        predict.main([])
    assert info.value.code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("x")
    (empty / "sub").mkdir()
    assert predict.main([str(empty)]) == 1
    err = capsys.readouterr().err
    assert "no image files" in err and f"skipped {empty / 'notes.md'}: not an image type" in err
    assert f"skipped {empty / 'sub'}: a sub-folder" in err
    with pytest.raises(SystemExit) as info:
        predict.main(["--max-faces", "0", str(empty)])
    assert info.value.code == 2


@pytest.mark.slow
def test_a_failing_gradcam_warns_and_keeps_the_results(analyzer, photos, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no gradients")

    monkeypatch.setattr(analyzer, "explain_heads", broken)
    code = predict.main(["--json", "--gradcam-dir", str(tmp_path / "cams"), str(photos["astronaut"])], analyzer=analyzer)
    captured = capsys.readouterr()
    assert code == 0
    (entry,) = json.loads(captured.out)
    assert entry["error"] is None and len(entry["faces"]) == 1
    assert "Grad-CAM" in captured.err and "no gradients" in captured.err


def test_gradcam_stems_never_collide():
    paths = [Path("c/me-2.jpg"), Path("a/me.jpg"), Path("b/me.png"), Path("d/you.jpg"), Path("e/me.bmp")]
    stems = predict.gradcam_stems(paths)
    assert stems[:2] == ["me-2", "me"] and stems[3] == "you"
    assert len(set(stems)) == len(stems)
    # names that differ only in case would overwrite each other on macOS and Windows disks
    assert predict.gradcam_stems([Path("a/Me.jpg"), Path("b/me.png"), Path("c/ME-2.bmp")]) == ["Me", "me-2", "ME-2-2"]
    assert all(stem.startswith(path.stem) for stem, path in zip(stems, paths, strict=True))


def test_gradcam_files_of_dotted_names_never_overwrite_each_other(tmp_path, capsys):
    from tests.app_support import FakeAnalyzer, portrait_bytes

    names = ["a.b.jpg", "a.c.jpg", "two.faces.jpg", "25_1_2_20170116174525125.jpg.chip.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(portrait_bytes("JPEG"))
    out_dir = tmp_path / "cams"
    args = ["--json", "--gradcam-dir", str(out_dir), *(str(tmp_path / n) for n in names)]
    assert predict.main(args, analyzer=FakeAnalyzer(faces=2)) == 0
    capsys.readouterr()
    stems = [n[: -len(".jpg")] for n in names]
    expected = {f"{stem}_face{i}_{head}.{ext}" for stem in stems for i in (0, 1)
                for head in ("age", "gender", "ethnicity") for ext in ("png", "npy")}
    assert {p.name for p in out_dir.iterdir()} == expected  # 4 photos x 2 faces x 3 heads x 2 files



def test_a_crowd_shows_the_largest_faces_and_says_how_many_were_found(tmp_path, capsys):
    from tests.app_support import FakeAnalyzer, portrait_bytes

    photo = tmp_path / "crowd.png"
    photo.write_bytes(portrait_bytes())
    fake = FakeAnalyzer(faces=25)
    assert predict.main(["--json", "--max-faces", "20", str(photo)], analyzer=fake) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["error"] is None and len(entry["faces"]) == 20 and entry["faces_found"] == 25
    assert predict.main([str(photo)], analyzer=fake) == 0  # the default limit is settings.MAX_FACES
    assert "note: showing 20 of 25 faces, the 20 largest" in capsys.readouterr().out


def test_a_multi_frame_file_says_which_frame_was_analysed(tmp_path, capsys):
    from tests.app_support import FakeAnalyzer, portrait_bytes

    face = np.asarray(Image.open(io.BytesIO(portrait_bytes())).convert("RGB"))
    flat = np.full_like(face, 128)
    Image.fromarray(flat).save(tmp_path / "late.gif", save_all=True, append_images=[Image.fromarray(face)])
    darker = np.full_like(face, 60)  # GIF merges identical consecutive frames: two different flat ones
    Image.fromarray(face).save(tmp_path / "early.gif", save_all=True,
                               append_images=[Image.fromarray(flat), Image.fromarray(darker)])
    assert predict.main([str(tmp_path / "late.gif"), str(tmp_path / "early.gif")], analyzer=FakeAnalyzer()) == 0
    out = capsys.readouterr().out
    assert "late.gif" in out and "no face found (the file has 2 frames; only frame 1 was analysed)" in out
    assert "note: the file has 3 frames; only frame 1 was analysed" in out
