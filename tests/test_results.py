"""model.results.photo_notes: the one wording of faces left out and frames not looked at."""

from __future__ import annotations

import numpy as np

from model.results import PhotoResult, photo_notes


def test_notes_say_which_faces_and_which_frame_were_analysed():
    assert photo_notes(3, 3, 1) == []
    assert photo_notes(0, 0, 1) == []
    assert photo_notes(20, 25, 1) == ["showing 20 of 25 faces, the 20 largest"]
    assert photo_notes(0, 0, 4) == ["the file has 4 frames; only frame 1 was analysed"]
    assert photo_notes(2, 5, 2) == ["showing 2 of 5 faces, the 2 largest", "the file has 2 frames; only frame 1 was analysed"]


def test_a_photo_result_gives_its_own_notes():
    gif = PhotoResult(photo=np.zeros((4, 4, 3), np.uint8), faces=[], faces_found=0, frames=3)
    assert not gif.limited and gif.notes == photo_notes(0, 0, 3)
