"""The evaluate CLI on tiny generated data with an untrained model of the shipped shape."""

import json
import subprocess
import sys

import pytest

from model.settings import PROJECT_ROOT
from tests.conftest import write_utkface_folder

pytestmark = pytest.mark.slow


def test_evaluate_prints_one_json_object_and_counts_bad_files(tmp_path, untrained_model_path):
    data = tmp_path / "faces"
    write_utkface_folder(data, n=10, seed=21)
    (data / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(b"name lacks a field")
    (data / "44_0_2_20170116174525125.jpg.chip.jpg").write_bytes(b"truncated, not a jpeg")
    out = tmp_path / "metrics.json"
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--data-dir", str(data), "--model", str(untrained_model_path),
         "--json", str(out), "--quiet", "--no-tta"],
        cwd=tmp_path, env={"PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert report == json.loads(out.read_text())
    assert report["n"] == 10
    assert report["skipped_unparseable"] == 1 and report["skipped_unreadable"] == 1
    for key in ("age_mae", "gender_accuracy", "ethnicity_accuracy", "age_within_5_years", "gender_ece", "ethnicity_ece"):
        assert isinstance(report[key], float)
    assert set(report["age"]["by_age_group"]) >= {"0-2", "20-29", "70+"}
    assert len(report["gender"]["confusion_matrix"]) == 2 and len(report["ethnicity"]["confusion_matrix"]) == 5


def test_evaluate_missing_model_is_a_clear_error(tmp_path, utkface_dir):
    from training.evaluate import main

    assert main(["--data-dir", str(utkface_dir), "--model", str(tmp_path / "none.keras"), "--quiet"]) == 2
