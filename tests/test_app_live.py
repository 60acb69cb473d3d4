"""AppTest of the Live page with a fake analyzer (fake detector and model of tests/test_live.py),
the ICE-server setting, and the Streamlit runtime fix the live video depends on."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from model import settings
from tests.app_support import FakeAnalyzer, open_page, write_model_card
from tests.test_live import FakeDetector, FakeModel, scene
from ui import photos, state

PAGE = "pages/live.py"


class LiveFake(FakeAnalyzer):
    """The app's fake analyzer plus what the live loop uses: a detector and a batched predictor."""

    def __init__(self):
        super().__init__(faces=1)
        self.detector = FakeDetector()
        self.predictor = FakeModel()


class FakeWebrtc:
    """Stands in for streamlit_webrtc, which needs a live server session (AppTest has none)."""

    class WebRtcMode:
        SENDRECV = "sendrecv"

    def __init__(self):
        self.state = SimpleNamespace(playing=False, signalling=False)
        self.calls: list[dict] = []

    def webrtc_streamer(self, **kwargs):
        self.calls.append(kwargs)
        return SimpleNamespace(state=self.state)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    from ui import live

    monkeypatch.setenv("FACELENS_MODEL_CARD", str(write_model_card(tmp_path / "card.json")))
    monkeypatch.delenv("FACELENS_ICE_SERVERS", raising=False)
    webrtc = FakeWebrtc()
    monkeypatch.setattr(live, "webrtc_module", lambda: webrtc)
    analyzer = LiveFake()
    analyzer.webrtc = webrtc
    state.set_analyzer_override(analyzer)
    yield analyzer
    state.set_analyzer_override(None)


def test_live_page_shows_the_stream_and_invites_a_start(fake):
    from ui import live

    at = open_page(PAGE)
    assert not at.exception and not at.error
    assert at.title[0].value == "Live camera"
    assert any("Press **Start**" in info.value for info in at.info)
    processor = at.session_state[live.PROCESSOR_KEY]
    assert processor.detector is fake.detector and processor.predictor is fake.predictor
    call = fake.webrtc.calls[-1]
    assert call["rtc_configuration"] == {"iceServers": []}  # no STUN lookup by default: works offline
    assert call["media_stream_constraints"]["audio"] is False
    assert callable(call["queued_video_frames_callback"])


def test_playing_stream_shows_fps_latency_stage_times_and_labels(fake):
    from ui import live

    at = open_page(PAGE)
    processor = at.session_state[live.PROCESSOR_KEY]
    for x in range(100, 130, 3):
        processor.process(scene({1: (x, 80)}))
    fake.webrtc.state.playing = fake.webrtc.state.signalling = True
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Annotated fps"]) > 0
    assert metrics["Latency"].endswith(" ms")
    assert any(md.value.startswith("**1: 30 y, Female**") for md in at.markdown)
    assert any("model" in c.value and "per frame (medians)" in c.value for c in at.caption)
    assert any("camera 320x240" in c.value for c in at.caption)


def test_a_connection_that_never_plays_points_to_the_still_camera(fake, monkeypatch):
    from ui import live

    monkeypatch.setattr(live, "CONNECT_TIMEOUT_S", 0.0)
    fake.webrtc.state.signalling = True
    at = open_page(PAGE)
    at.run()
    assert any("WebRTC could not connect" in w.value for w in at.warning)


def test_freeze_without_a_frame_says_so(fake):
    at = open_page(PAGE)
    at.button(key="live_freeze").click().run()
    assert not at.exception
    assert any("No frame yet" in w.value for w in at.warning)
    assert at.title[0].value == "Live camera"


def test_freeze_sends_the_current_frame_to_the_analyze_page(fake):
    from ui import live

    at = open_page(PAGE)
    processor = at.session_state[live.PROCESSOR_KEY]
    processor.process(scene({1: (100, 80)}))  # what the video callback does with a camera frame
    at.button(key="live_freeze").click().run()
    assert not at.exception
    assert at.title[0].value == "Analyze a photo"
    assert [m.label for m in at.metric] == ["Estimated age", "Gender"]  # the full face card
    names = [a.name for a in at.session_state[state.RESULTS_KEY].values()]
    assert len(names) == 1 and names[0].startswith("live_frame_")  # also what the Explain page offers
    # the browser stays on Analyze (AppTest would rerun the Live page): the frozen frame stays until
    # the sample button replaces it
    at.switch_page("pages/analyze.py").run()
    assert [m.label for m in at.metric] == ["Estimated age", "Gender"]
    at.button(key="analyze_sample").click().run()
    assert [a.name for a in at.session_state[state.RESULTS_KEY].values()][-1] == photos.SAMPLE_NAME


def test_ice_servers_default_to_none_and_read_json(monkeypatch):
    monkeypatch.delenv("FACELENS_ICE_SERVERS", raising=False)
    assert settings.ice_servers() == []
    monkeypatch.setenv("FACELENS_ICE_SERVERS", '{"urls": "stun:stun.example.org:3478"}')
    assert settings.ice_servers() == [{"urls": "stun:stun.example.org:3478"}]
    turn = '[{"urls": ["turn:t.example.org:3478"], "username": "u", "credential": "p"}]'
    monkeypatch.setenv("FACELENS_ICE_SERVERS", turn)
    assert settings.ice_servers()[0]["username"] == "u"
    for bad in ("stun:stun.example.org", '[{"url": "stun:x"}]', "[1]"):
        monkeypatch.setenv("FACELENS_ICE_SERVERS", bad)
        with pytest.raises(ValueError, match="FACELENS_ICE_SERVERS"):
            settings.ice_servers()


def test_a_malformed_ice_setting_is_shown_and_the_page_still_works(fake, monkeypatch):
    monkeypatch.setenv("FACELENS_ICE_SERVERS", "not json")
    at = open_page(PAGE)
    assert not at.exception
    assert any("FACELENS_ICE_SERVERS is not valid JSON" in e.value for e in at.error)
    assert at.title[0].value == "Live camera"


def test_streamlit_no_longer_clears_the_keras_session_after_a_run(monkeypatch):
    from streamlit.runtime.scriptrunner import script_runner

    from ui import runtime

    cleared = []
    fake_keras = SimpleNamespace(backend=SimpleNamespace(clear_session=lambda: cleared.append(True)))
    monkeypatch.setitem(sys.modules, "keras", fake_keras)
    monkeypatch.setattr(script_runner, "_clean_problem_modules", script_runner._clean_problem_modules)
    runtime.keep_keras_session()  # app.py does this (earlier tests may have run it already)
    runtime.STREAMLIT_CLEAN_UP[0]()
    assert cleared == [True]  # what Streamlit does by itself after every run
    script_runner._clean_problem_modules()
    assert cleared == [True]  # and no more
