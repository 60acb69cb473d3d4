"""Load benchmark of the app: N browsers upload a photo at the same moment; how long until each
sees its face card, and how much memory the server holds.

    python -m tools.load                        # 6 sessions x 3 rounds, the shipped model
    python -m tools.load --sessions 1 --rounds 5
    python -m tools.load --sessions 6 --rounds 6 --json load.json

Starts ``streamlit run app.py`` on a free loopback port (127.0.0.1 only, nothing leaves the
machine), opens ``--sessions`` pages in one headless Chromium (/usr/bin/chromium, driven by
Playwright as in the browser test) and, each round, has every page load the Analyze page
afresh (a new Streamlit session; the previous one disconnects) and upload a 640x480 JPEG of
the benchmark portrait at the same instant. Each upload's bytes differ (a different JPEG
quality per session and round), so every upload is analysed, never served from a cache.

A closed or reloaded page's session stays on the server for ``server.disconnectedSessionTTL``
(120 s), so over a run the server holds every session of the last two minutes: the memory
figures include what each keeps.

Time to card: from the upload call to the first "Estimated age" of that page's face card
being visible. Memory: the server's resident set (VmRSS) after each round, and its peak
(VmHWM). The browser runs at lower priority (nice 10) so that the server gets the cores
first. Every wait is bounded (``--timeout``); the server is stopped at the end, whatever
happens. Not part of the test suite: it takes minutes and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.serve import CHROMIUM, CHROMIUM_ARGS, free_port, healthy, stop_server

ROOT = Path(__file__).resolve().parent.parent
# Also keep a background page's timers running: every page uploads at once.
BROWSER_ARGS = [*CHROMIUM_ARGS, "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows"]
SERVER_START_S = 120




def server_memory_mb(pid: int) -> dict[str, float]:
    """Resident set now and at its peak (MB) of process ``pid``, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024.0
    return {"rss_mb": round(fields.get("VmRSS", 0.0), 1), "peak_mb": round(fields.get("VmHWM", 0.0), 1)}


def upload_photos(sessions: int, rounds: int, size: tuple[int, int] = (640, 480)) -> list[list[bytes]]:
    """Per round, per session: the benchmark portrait as JPEG bytes, each upload different."""
    from model.bench_common import bench_photo, jpeg_bytes

    photo = bench_photo(*size)
    return [[jpeg_bytes(photo, quality=95 - (r * sessions + s) % 40) for s in range(sessions)] for r in range(rounds)]


def start_server(port: int, log_path: Path, env_extra: dict[str, str], app_dir: Path = ROOT) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env_extra}
    env.pop("UTKFACE_DIR", None)
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(app_dir / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


async def _one_upload(page, url: str, data: bytes, name: str, start: asyncio.Event, timeout_ms: int) -> float:
    """Open the Analyze page, wait for the common start, upload, return seconds until the card shows."""
    await page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    dropzone = page.locator("[data-testid='stFileUploaderDropzoneInput']")
    await dropzone.wait_for(state="attached", timeout=timeout_ms)
    await start.wait()
    t0 = time.perf_counter()
    await dropzone.set_input_files(files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
    await page.get_by_text("Estimated age").first.wait_for(state="visible", timeout=timeout_ms)
    return time.perf_counter() - t0


async def _drive(url: str, photos: list[list[bytes]], timeout_s: float, server_pid: int) -> dict:
    from playwright.async_api import async_playwright

    sessions = len(photos[0])
    timeout_ms = int(timeout_s * 1000)
    rounds_out = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=BROWSER_ARGS,
                                                   timeout=60_000)
        try:
            contexts = [await browser.new_context(viewport={"width": 1280, "height": 1000}) for _ in range(sessions)]
            pages = [await ctx.new_page() for ctx in contexts]
            # Warm-up: one page loads the app once (the model loads on the first visit; not timed).
            warm = time.perf_counter()
            await pages[0].goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
            await pages[0].get_by_text("Upload one or more photos").first.wait_for(timeout=timeout_ms)
            warm_s = time.perf_counter() - warm
            for r, round_photos in enumerate(photos):
                start = asyncio.Event()
                tasks = [asyncio.create_task(_one_upload(page, url, data, f"r{r}_s{s}.jpg", start, timeout_ms))
                         for s, (page, data) in enumerate(zip(pages, round_photos, strict=True))]
                await asyncio.sleep(0)
                # every page has its uploader before the common start (bounded by the timeout)
                for page in pages:
                    await page.locator("[data-testid='stFileUploaderDropzoneInput']").wait_for(
                        state="attached", timeout=timeout_ms)
                await asyncio.sleep(1.0)  # let the page loads' script runs finish
                start.set()
                times = await asyncio.gather(*tasks)
                await asyncio.sleep(1.0)
                rounds_out.append({"round": r + 1, "seconds": [round(t, 3) for t in times],
                                   **server_memory_mb(server_pid)})
                print(f"round {r + 1}: time to card {', '.join(f'{t:.2f}' for t in sorted(times))} s; "
                      f"server {rounds_out[-1]['rss_mb']:.0f} MB", file=sys.stderr)
        finally:
            await browser.close()
    return {"warm_up_s": round(warm_s, 2), "rounds": rounds_out}


def summarise(result: dict) -> dict:
    times = sorted(t for rnd in result["rounds"] for t in rnd["seconds"])

    def pct(q: float) -> float:
        return times[min(len(times) - 1, max(0, round(q * (len(times) - 1))))]

    return {
        "uploads": len(times),
        "p50_s": round(statistics.median(times), 2),
        "p95_s": round(pct(0.95), 2),
        "max_s": round(times[-1], 2),
        "server_rss_mb_after_each_round": [rnd["rss_mb"] for rnd in result["rounds"]],
        "server_peak_mb": max(rnd["peak_mb"] for rnd in result["rounds"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=6, help="browser sessions uploading at once (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="simultaneous uploads per session (default 3)")
    parser.add_argument("--photo-size", default="640x480", metavar="WxH",
                        help="size of the uploaded photo (default 640x480; 4032x3024 is a 12 MP phone photo)")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on every wait, seconds (default 180)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--server-log", type=Path, default=None, help="keep the server's output in this file")
    parser.add_argument("--app-dir", type=Path, default=ROOT,
                        help="the project folder whose app.py is served (e.g. a checkout of an older commit)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the server (repeatable), e.g. MALLOC_ARENA_MAX=2")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 1
    if args.sessions < 1 or args.rounds < 1:
        parser.error("--sessions and --rounds must be at least 1")
    width, _, height = args.photo_size.lower().partition("x")
    photos = upload_photos(args.sessions, args.rounds, (int(width), int(height)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log_path = args.server_log or Path(tmp) / "streamlit.log"
        proc = start_server(port, log_path, dict(item.split("=", 1) for item in args.server_env), args.app_dir)
        try:
            deadline = time.monotonic() + SERVER_START_S
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(f"streamlit did not start:\n{log_path.read_text()[-3000:]}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            idle = server_memory_mb(proc.pid)
            os.nice(10)  # the browser (started from here) yields the cores to the server
            result = asyncio.run(_drive(url, photos, args.timeout, proc.pid))
        finally:
            stop_server(proc)
    load = os.getloadavg()
    summary = {"sessions": args.sessions, "rounds": args.rounds, "photo": args.photo_size,
               "upload_kb": round(statistics.mean(len(d) for r in photos for d in r) / 1024), "server_env": args.server_env,
               "server_idle_mb": idle["rss_mb"], **summarise(result),
               "warm_up_s": result["warm_up_s"], "load_average": [round(v, 2) for v in load], "cpus": os.cpu_count()}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**summary, "rounds_detail": result["rounds"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
