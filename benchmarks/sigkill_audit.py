"""SIGKILL trials of a writing runtime: after each kill the audit verifies with every row the
runtime had reported committed, and the next start continues the chain without reusing a seq.

The child is the real Runtime (fast mode of bench_rss: no inference) writing into one audit
folder with small files (rotation, so kills also land in file creation); it prints each
committed seq. The parent kills it at a random moment, verifies, and starts the next child.

    python benchmarks/sigkill_audit.py --trials 50 [--audit DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.audit_verify import verify


def child(folder: Path) -> None:
    import numpy as np
    from bench_rss import H, W, fast_runtime, submit

    rng = np.random.default_rng(os.getpid())
    frames = [rng.integers(20, 230, (H, W), dtype=np.uint8) for _ in range(2)]

    def committed(out) -> None:
        print(rt_box[0].audit.last_seq, flush=True)  # printed after the row's commit

    rt_box: list = []
    with fast_runtime(folder, rotate_bytes=64 * 1024, on_outcome=committed) as rt:
        rt_box.append(rt)
        i = 0
        while True:
            i += 1
            submit(rt, i, frames)
            if i % 16 == 0:
                rt.drain(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--audit", type=Path)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    folder = args.audit or Path(tempfile.mkdtemp(prefix="fod-kill-")) / "audit"
    rnd = random.Random(0)
    reported, last_verified, lost = 0, 0, 0
    for trial in range(args.trials):
        p = subprocess.Popen(
            [sys.executable, __file__, "--child", str(folder)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.5 + rnd.random() * 1.5)  # start-up, then a random point mid-write
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        seqs = [int(x) for x in out.split()]
        reported = max([reported, *seqs])
        r = verify(folder)  # raises on any gap, edit, cut or half-made file
        lost += r.last_seq < reported
        print(
            f"trial {trial + 1:>3}: {len(seqs):>4} committed this run, chain intact to seq "
            f"{r.last_seq} in {r.files} files" + ("  LOST ROWS" if r.last_seq < reported else ""),
            flush=True,
        )
        assert r.last_seq >= last_verified  # never shorter after a restart
        last_verified = r.last_seq
    print(f"{args.trials} kills: every audit verified; runs that lost a reported row: {lost}")


if __name__ == "__main__":
    main()
