"""`fod bundle make --reference`: the reference frames a bundle carries (edge/reference.py
says what a unit does with them), picked from a labelled set and measured with the
bundle's own models on ONNX Runtime here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from edge.errors import FodError
from edge.reference import CLASS_MIN


def make_reference(
    folder: Path, count: int, models: Sequence[Tuple[str, Path]], out: Path
) -> Tuple[Path, Dict[str, Any]]:
    """`count` images of the labelled set `folder` that hold objects, picked so that the
    first of `models` ((role, path), the one measured in full) finds objects of every
    class in them (`pick_frames`), in the model's frame layout, written to `out` with their
    boxes and classes -> (out, the manifest's `reference` entry). Per class it records the
    fewest found as that class by any of `models`: a unit runs one of them, and a class
    that one model finds too rarely to judge alone is judged only in the total there."""
    import cv2

    from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge.detector import EdgeDetector
    from edge.reference import (
        OWN_CLASS,
        Reference,
        model_frame_shape,
        pick_frames,
        reference_meta,
        save_reference,
        seen_in,
        sightings,
    )
    from training.data.coco import load_coco
    from training.data.dataset import read_rgb

    coco = load_coco(folder)  # validated: finite boxes of positive size, known images
    chosen = [im for im in sorted(coco.images, key=lambda im: im.id) if coco.annotations.get(im.id)]
    if not chosen:
        raise FodError(f"{coco.source}: no image with objects for the reference frames")
    (role, model), others = models[0], models[1:]
    with OnnxRuntimeBackend(model) as backend:
        shape, names = model_frame_shape(backend.info), backend.info.class_names
        label_of = class_indices(coco, names)

        def frame(im: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
            """An image in the model's layout, its boxes [K, 4] xyxy, their classes [K]."""
            path = folder / "images" / im.file_name
            img = read_rgb(path)
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if len(shape) == 2 else img
            if img.shape != shape:
                raise FodError(f"{path}: is {img.shape}, the model takes frames of {shape}")
            anns = coco.annotations[im.id]
            boxes = np.float32([[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in anns)])
            return img, boxes, np.int64([label_of[a.category_id] for a in anns])

        detect = EdgeDetector(backend, backend.info).detect

        def found_classes() -> Iterator[np.ndarray]:  # per image, the classes found as such
            for im in chosen:
                img, boxes, labels = frame(im)
                yield labels[seen_in(detect([img])[0], boxes, labels) == OWN_CLASS]

        picked = [
            frame(chosen[i]) for i in pick_frames(found_classes(), len(chosen), count, len(names))
        ]
        ref = Reference(
            np.stack([p[0] for p in picked]),
            np.concatenate([p[1] for p in picked]),
            np.concatenate([np.full(len(p[1]), i, np.int64) for i, p in enumerate(picked)]),
            np.concatenate([p[2] for p in picked]),
        )
        seen = sightings(detect, ref)
        kernels = backend.kernels
    if not seen.any():
        raise FodError(f"{model}: finds none of the {len(ref.boxes)} reference objects in {folder}")
    meta = reference_meta(ref, seen, f"onnxruntime {role} ({kernels})", len(names))
    for _, path in others:
        with OnnxRuntimeBackend(path) as other:
            own = ref.labels[sightings(EdgeDetector(other, other.info).detect, ref) == OWN_CLASS]
        by_class = np.bincount(own, minlength=len(names))
        meta["found_by_class"] = np.minimum(meta["found_by_class"], by_class).tolist()
    meta["found_by_class_of"] = [r for r, _ in models]  # the fewest of these models
    save_reference(out, ref)
    return out, meta


def class_indices(coco: Any, names: List[str]) -> Dict[int, int]:
    """The set's category ids -> the model's class indices, by name; FodError naming the
    set where one of its categories is not a class of the model."""
    unknown = sorted({c.name for c in coco.categories} - set(names))
    if unknown:
        raise FodError(f"{coco.source}: categories {unknown} are not the model's classes {names}")
    return {c.id: names.index(c.name) for c in coco.categories}


def unjudged_classes(ref: Dict[str, Any], names: List[str]) -> List[str]:
    """A line for each class the reference frames hold too few of, found as that class by
    the bundle's models, for a unit to judge it alone (a blind class is then unseen where
    the total still passes)."""
    models = ", ".join(ref.get("found_by_class_of", []))
    return [
        f"reference frames: {name} found as {name} {n} time(s) by the fewest of {models} "
        f"(under {CLASS_MIN}): judged only in the total; pick more frames "
        "(--reference-images) or a set with more of it"
        for name, n in zip(names, ref.get("found_by_class", []))
        if n < CLASS_MIN
    ]
