"""`fod synth`: write a synthetic set (COCO stills + container sequences) to disk.

Workers render and write their own files and send back only the small truth
records, so memory stays flat in the number of images. Every item has its own
seed (SeedSequence([seed, kind, index])): the bytes do not depend on the number of
workers. The set is written into a temp folder that is renamed at the end.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from edge.errors import FodError
from edge.fsutil import atomic_write_json, staged_dir

from .preview import write_coco_preview
from .synth import CLASS_NAMES, SynthConfig, render_image, render_sequence
from .synth_looks import Look

_STILL, _SEQUENCE = 0, 1  # seed streams: stills and sequences never share random numbers
SUPERCATEGORY = "foreign_matter"


def categories() -> List[Dict[str, Any]]:
    return [
        {"id": i + 1, "name": n, "supercategory": SUPERCATEGORY} for i, n in enumerate(CLASS_NAMES)
    ]


def item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def _look_record(look: Optional[Look]) -> Dict[str, Any]:
    """What an item of a non-classic set records of its look (a classic item: the name)."""
    return look.as_dict() if look is not None else {"family": "classic"}


def _still_job(
    job: Tuple[Path, SynthConfig, int, int],
) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    root, cfg, seed, i = job
    frame = render_image(item_rng(seed, _STILL, i), cfg)
    name = f"{i:06d}.png"
    if not cv2.imwrite(str(root / "images" / name), frame.image):
        raise FodError(f"{root / 'images' / name}: could not write PNG")
    record: Dict[str, Any] = {
        "id": i + 1,
        "file_name": name,
        "width": cfg.width,
        "height": cfg.height,
    }
    if cfg.look != "classic":
        record["look"] = _look_record(frame.look)
    anns = [
        {
            "image_id": i + 1,
            "category_id": o.category_id,
            "bbox": list(o.box),
            "area": o.box[2] * o.box[3],
            "iscrowd": 0,
        }
        for o in frame.labelled
        if o.box is not None
    ]
    return record, anns


def _sequence_job(job: Tuple[Path, SynthConfig, int, int]) -> Dict[str, Any]:
    root, cfg, seed, j = job
    reject, frames = render_sequence(item_rng(seed, _SEQUENCE, j), cfg)
    rel = f"sequences/c{j + 1:06d}.avi"
    # FFV1 is lossless: a lossy codec would erase the 2-px particles the set is about.
    writer = cv2.VideoWriter(
        str(root / rel), cv2.VideoWriter_fourcc(*"FFV1"), cfg.fps, (cfg.width, cfg.height), False
    )
    if not writer.isOpened():
        raise FodError(f"{root / rel}: OpenCV cannot write FFV1 video (no FFmpeg backend?)")
    truth = []
    look = None
    try:
        for f in frames:
            look = f.look
            writer.write(f.image)
            truth.append(
                [
                    {"bbox": list(o.box), "category_id": o.category_id, "track_id": o.track_id}
                    for o in f.labelled
                    if o.box is not None
                ]
            )
    finally:
        writer.release()
    record = {
        "id": j + 1,
        "path": rel,
        "label": "reject" if reject else "accept",
        "num_frames": cfg.frames,
        "width": cfg.width,
        "height": cfg.height,
        "fps": cfg.fps,
        "frames": truth,
    }
    if cfg.look != "classic":
        record["look"] = _look_record(look)
    return record


def write_synthetic_set(
    out: Path,
    images: int,
    sequences: int,
    cfg: SynthConfig,
    seed: int,
    workers: int = 1,
    progress: bool = True,
) -> Dict[str, int]:
    """Write the set to `out` (must not exist or be empty); returns counts for the summary."""
    if images < 0 or sequences < 0:
        raise FodError(f"--images and --sequences must be >= 0, got {images} and {sequences}")
    if images == 0 and sequences == 0:
        raise FodError("nothing to generate: --images and --sequences are both 0")
    if cfg.width < 128 or cfg.height < 128:
        raise FodError(f"--size {cfg.width}x{cfg.height} is too small (at least 128x128)")
    if cfg.frames < 1:
        raise FodError(f"--frames must be >= 1, got {cfg.frames}")
    if workers < 1:
        raise FodError(f"--workers must be >= 1, got {workers}")
    config = dataclasses.asdict(cfg)
    look = config.pop("look")
    info = {"description": "pharma-fod synthetic lamp inspection", "seed": seed, "config": config}
    if look != "classic":  # classic sets keep the first sets' bytes
        info["look"] = look
    counts = {
        "images": images,
        "annotations": 0,
        "negatives": 0,
        "sequences": sequences,
        "rejects": 0,
    }
    with staged_dir(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "sequences").mkdir()
        pool = mp.get_context("spawn").Pool(workers, _init_worker) if workers > 1 else None
        try:
            imap = pool.imap if pool is not None else map
            records, anns = [], []
            jobs = ((tmp, cfg, seed, i) for i in range(images))
            bar = None if progress else True  # None: a bar only when stderr is a terminal
            for rec, a in tqdm(imap(_still_job, jobs), total=images, desc="images", disable=bar):
                records.append(rec)
                counts["negatives"] += not a
                for ann in a:
                    ann["id"] = len(anns) + 1
                    anns.append(ann)
            counts["annotations"] = len(anns)
            containers = []
            jobs = ((tmp, cfg, seed, j) for j in range(sequences))
            for c in tqdm(
                imap(_sequence_job, jobs), total=sequences, desc="sequences", disable=bar
            ):
                containers.append(c)
                counts["rejects"] += c["label"] == "reject"
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        atomic_write_json(
            tmp / "annotations.json",
            {"info": info, "images": records, "annotations": anns, "categories": categories()},
        )
        atomic_write_json(
            tmp / "sequences.json",
            {"info": info, "categories": categories(), "containers": containers},
        )
        if images:
            write_coco_preview(tmp, tmp / "preview.png")
    return counts
