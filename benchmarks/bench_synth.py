"""Generator throughput and peak memory: `python benchmarks/bench_synth.py [--json]`.

Runs `fod synth` in a child process per configuration (1280x800) and reads the
child's peak RSS from the OS (ru_maxrss of the largest process in its tree,
worker processes included). Target: 1000 images in under 60 s on 2 cores, with
peak memory flat from 100 to 1000 images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run(images: int, workers: int, size: str) -> dict:
    """One `fod synth` in a fresh process: wall time and peak RSS of that process tree."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "fod",
            "synth",
            "--out",
            str(Path(tmp) / "d"),
            "--images",
            str(images),
            "--sequences",
            "0",
            "--size",
            size,
            "--workers",
            str(workers),
            "--json",
        ]
        code = (
            "import resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
            "dt = time.perf_counter() - t\n"
            "r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
            "print(dt, r)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, *cmd], check=True, capture_output=True, text=True
        )
        dt, rss_kb = out.stdout.split()
    dt = float(dt)
    return {
        "images": images,
        "workers": workers,
        "size": size,
        "seconds": round(dt, 2),
        "images_per_s": round(images / dt, 1),
        "peak_rss_mib": round(int(rss_kb) / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1280x800")
    p.add_argument("--images", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = [run(n, w, args.size) for n in args.images for w in args.workers]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'images':>7} {'workers':>7} {'seconds':>8} {'img/s':>7} {'peak RSS MiB':>13}")
    for r in rows:
        print(
            f"{r['images']:>7} {r['workers']:>7} {r['seconds']:>8} "
            f"{r['images_per_s']:>7} {r['peak_rss_mib']:>13}"
        )


if __name__ == "__main__":
    main()
