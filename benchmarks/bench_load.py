"""The server under a mixed, partly hostile load on loopback: errors, memory, and /api/health meanwhile.

Starts `digitrec serve` on a free port, then runs two loads, each bounded in requests and in time:

- mixed: 16 clients send good pictures (a drawing, a photo), damaged and wrong-format files, pictures
  declaring huge canvases, bad JSON (invalid UTF-8 included), big bad /api/classify bodies and good
  ones, while slow clients dribble headers and send bodies shorter than their Content-Length;
- gif: 16 clients each sending a 35-byte GIF that declares 6300x6300 pixels.

While each runs, /api/health is asked every 100 ms. Prints a markdown table: requests, server errors
(5xx, or a connection dropped while answering), the server's memory (resident, from /proc) before,
at its peak and after, and /api/health's latency (median and worst).

    DIGITREC_DATA=../shared/mnist nice -n 5 python benchmarks/bench_load.py [--requests 2000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import re
import signal
import struct
import subprocess
import sys
import time

import httpx
import numpy as np
from PIL import Image

CLIENTS = 16  # clients sending requests at once
SLOW_CLIENTS = 8  # clients that dribble their requests, started over as the server lets them go
HEALTH_EVERY_S = 0.1  # how often /api/health is asked during a load
REQUEST_TIMEOUT_S = 5  # the server's --request-timeout here: slow clients are let go after this long


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gif_canvas(width: int, height: int) -> bytes:
    """A GIF of a few dozen bytes: a 1x1 frame on a canvas declaring width x height pixels."""
    gif = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    gif[6:10] = struct.pack("<HH", width, height)
    return bytes(gif)


def requests_mix() -> list[tuple[str, dict]]:
    """(path, httpx keyword arguments) for each kind of request in the mixed load."""
    rng = np.random.default_rng(0)
    drawing = np.full((280, 280), 255, np.uint8)
    drawing[60:220, 130:150] = 0  # a "1"
    photo = rng.integers(180, 256, (400, 1000, 3), dtype=np.uint8)
    photo[100:300, 200:230] = 20
    png = encode(Image.fromarray(drawing), "PNG")
    jpeg = encode(Image.fromarray(photo), "JPEG", quality=85)
    tiff = bytearray(encode(Image.new("L", (40, 40), 255), "TIFF"))
    tiff[4:8] = struct.pack("<I", len(tiff) + 1000)  # the first page's index points past the end
    digits = rng.integers(0, 256, (8, 28, 28)).tolist()

    def upload(name, data):
        return {"files": {"file": (name, data, "application/octet-stream")}}

    return [
        ("/api/read", upload("drawing.png", png)),
        ("/api/read", upload("photo.jpg", jpeg)),
        ("/api/read", {"json": {"image": base64.encodebytes(png).decode()}}),
        ("/api/read", upload("cut.png", png[: len(png) // 2])),
        ("/api/read", upload("bad.tif", bytes(tiff))),
        ("/api/read", upload("notes.ppm", encode(Image.new("L", (30, 30)), "PPM"))),
        ("/api/read", upload("big.gif", gif_canvas(6300, 6300))),
        ("/api/read", upload("bigger.gif", gif_canvas(10000, 10000))),
        ("/api/read", {"content": b'{"image": "\xff\xfe"}', "headers": {"content-type": "application/json"}}),
        ("/api/read", {"content": b'{"image": ', "headers": {"content-type": "application/json"}}),
        ("/api/classify", {"json": {"images": digits}}),
        ("/api/classify", {"content": json.dumps({"images": [[[300] * 28] * 28] * 256}).encode(),
                           "headers": {"content-type": "application/json"}}),
    ]


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, resident at its peak so far) of a process, in MB (Linux)."""
    status = open(f"/proc/{pid}/status").read()
    rss, hwm = (int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM"))
    return rss, hwm


def reset_peak(pid: int) -> bool:
    """Start the process's peak-memory count afresh (Linux: clear_refs 5); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


async def slow_client(port: int, stop: asyncio.Event) -> int:
    """Open connections that send a part of a request and then nothing; -> how many the server let go."""
    let_go = 0
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/read HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"image\": \"iVBOR")
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(), timeout=REQUEST_TIMEOUT_S * 3)
            let_go += 1
        except asyncio.TimeoutError:
            pass
        writer.close()
    return let_go


async def run_load(url: str, port: int, pid: int, mix: list, n_requests: int, seconds: float, slow: bool) -> dict:
    stop = asyncio.Event()
    statuses: dict[int, int] = {}
    dropped = 0
    health: list[float] = []
    exact = reset_peak(pid)
    peak = memory_mb(pid)[0]
    sent = 0
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient, k: int):
        nonlocal sent, dropped
        while sent < n_requests and time.monotonic() < deadline:
            path, kw = mix[(sent + k) % len(mix)]
            sent += 1
            try:
                answer = await http.post(path, **kw)
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            except httpx.HTTPError:
                dropped += 1

    async def watch(http: httpx.AsyncClient):
        nonlocal peak
        while not stop.is_set():
            start = time.monotonic()
            answer = await http.get("/api/health")
            health.append(time.monotonic() - start) if answer.status_code == 200 else None
            peak = max(peak, memory_mb(pid)[0])
            await asyncio.sleep(HEALTH_EVERY_S)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=64)) as http, \
            httpx.AsyncClient(base_url=url, timeout=120) as monitor:
        watcher = asyncio.create_task(watch(monitor))
        slow_tasks = [asyncio.create_task(slow_client(port, stop)) for _ in range(SLOW_CLIENTS if slow else 0)]
        start = time.monotonic()
        await asyncio.gather(*(client(http, k) for k in range(CLIENTS)))
        elapsed = time.monotonic() - start
        stop.set()
        let_go = sum(await asyncio.gather(*slow_tasks))
        await watcher
    if exact:
        peak = max(peak, memory_mb(pid)[1])
    await asyncio.sleep(2)
    return {"requests": sum(statuses.values()) + dropped, "elapsed": elapsed, "statuses": statuses,
            "errors": sum(n for s, n in statuses.items() if s >= 500) + dropped, "peak": peak,
            "health_p50": float(np.median(health)) if health else float("nan"),
            "health_max": max(health, default=float("nan")), "slow_let_go": let_go}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests at most per load (default 2000)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds at most per load (default 60)")
    parser.add_argument("--model", help="run directory (default: the bundled model)")
    parser.add_argument("--workers", type=int, default=CLIENTS,
                        help=f"the server's --workers (default {CLIENTS}: every client's picture read at once, as on a 16-core machine)")
    args = parser.parse_args()

    cmd = [sys.executable, "-m", "digitrec.cli", "serve", "--port", "0", "--request-timeout", str(REQUEST_TIMEOUT_S),
           "--workers", str(args.workers)]
    server = subprocess.Popen(cmd + (["--model", args.model] if args.model else []), stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", server.stdout.readline()).group(0)
        port = int(url.rpartition(":")[2])
        httpx.get(url + "/api/health", timeout=30)
        rows = []
        loads = (("mixed, with slow clients", requests_mix(), True),
                 ("16 clients, 6300x6300 GIF", [("/api/read", {"files": {"file": ("g.gif", gif_canvas(6300, 6300))}})], False))
        for name, mix, slow in loads:
            before = memory_mb(server.pid)[0]
            r = asyncio.run(run_load(url, port, server.pid, mix, args.requests, args.seconds, slow))
            after = memory_mb(server.pid)[0]
            codes = " ".join(f"{s}:{n}" for s, n in sorted(r["statuses"].items()))
            rows.append(f"| {name} | {r['requests']} in {r['elapsed']:.0f} s | {codes} | {r['errors']} | "
                        f"{before:.0f} / {r['peak']:.0f} / {after:.0f} | "
                        f"{r['health_p50'] * 1000:.0f} / {r['health_max'] * 1000:.0f} | {r['slow_let_go']} |")
        print("| load | requests | answers (status:count) | server errors | server memory MB before / peak / after "
              "| /api/health ms p50 / max | slow connections let go |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print(f"server's peak resident memory over the whole run: {memory_mb(server.pid)[1]:.0f} MB")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
