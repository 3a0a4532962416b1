"""Throughput and latency of POST /api/read under concurrent clients on loopback.

Starts `digitrec serve` on a free port, then posts, from one client and from many at once, a one-digit
280x280 PNG (a drawing, as the page sends it) and a 1000x400 JPEG photo of a six-digit number. Prints a
markdown table of requests per second, p50/p99 latency and the server's processor time per request
(which, unlike the rest, does not depend on what else the machine is doing). The clients run in this
process, on the same cores as the server.

    DIGITREC_DATA=../shared/mnist nice -n 5 python benchmarks/bench_web.py [--model RUN_DIR] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
from PIL import Image

from digitrec.data import load_mnist
from digitrec.synth import Style, compose

WARM_UP_S = 1.0  # requests in the first second of each run are not counted


def pictures(data_dir: str | None) -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, bytes, text it shows), made of MNIST test digits."""
    mnist = load_mnist(data_dir)
    images, labels = mnist.test_images, mnist.test_labels
    rng = np.random.default_rng(1)
    # dark ink on white, as the page's drawing pad sends it
    drawing = compose([[images[6]]], [[labels[6]]], Style(scale=7.0), rng, size=(280, 280)).image[:, :, 0]
    photo = compose([list(images[:6])], [list(labels[:6])], Style(scale=4.0, light=0.4, noise=4, jpeg=85),
                    rng, size=(1000, 400))
    out = {}
    for name, fmt, pixels, text in (("one digit, 280x280 PNG", "PNG", drawing, str(labels[6])),
                                    ("six digits, 1000x400 JPEG photo", "JPEG", photo.image, photo.text)):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt, quality=90)
        out[name] = (f"picture.{fmt.lower()}", buf.getvalue(), text)
    return out


def cpu_seconds(pid: int) -> float:
    """Processor time (user + system) a process has used so far (Linux)."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()  # fields from the 3rd on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, server_pid: int, picture: tuple[str, bytes, str], clients: int, seconds: float) -> dict:
    """`clients` loops posting the picture for `seconds`; latencies of the requests after the warm-up."""
    file, data, _ = picture
    latencies, errors, done = [], 0, 0
    cpu = cpu_seconds(server_pid)
    start = time.perf_counter()
    counted_from, until = start + WARM_UP_S, start + WARM_UP_S + seconds

    async def client(http: httpx.AsyncClient):
        nonlocal errors, done
        while (t0 := time.perf_counter()) < until:
            answer = await http.post("/api/read", files={"file": (file, data)})
            t1 = time.perf_counter()
            done += 1
            if answer.status_code != 200:
                errors += 1
            elif t0 >= counted_from:
                latencies.append(t1 - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    cpu = cpu_seconds(server_pid) - cpu
    ms = 1000 * np.array(latencies)
    return {"n": len(ms), "rps": len(ms) / seconds, "p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
            "cpu_ms": 1000 * cpu / done, "errors": errors}


def start_server(model: str | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "digitrec.cli", "serve", "--port", "0"] + (["--model", model] if model else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    found = re.search(r"http://[^/\s]+/", line)
    if not found:
        proc.kill()
        sys.exit(f"digitrec serve did not start: {proc.stderr.read().strip() or line.strip() or 'no output'}")
    return proc, found.group(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="run directory (default: the bundled model)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--seconds", type=float, default=10, help="measured seconds per run (default 10)")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    args = p.parse_args()

    pics = pictures(args.data_dir)
    proc, url = start_server(args.model)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            model = http.get("/api/model").json()  # also waits for the server to be up
            for name, (file, data, text) in pics.items():
                read = http.post("/api/read", files={"file": (file, data)}).json()["text"]
                assert read == text, f"{name}: read {read!r}, expected {text!r}"
        print(f"model `{model['name']}`; server: `digitrec serve` on {url}; clients in this process "
              f"(httpx, asyncio); {os.cpu_count()} cores shared by both; {args.seconds:g} s per run\n")
        print("| picture | clients | requests/s | p50 latency | p99 latency | server processor time | errors |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, picture in pics.items():
            for clients in (1, args.clients):
                r = asyncio.run(load(url, proc.pid, picture, clients, args.seconds))
                print(f"| {name} | {clients} | {r['rps']:.1f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms "
                      f"| {r['cpu_ms']:.1f} ms | {r['errors']} |", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
