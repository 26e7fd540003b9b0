"""A COCO detection set read as numpy: RGB uint8 images, xyxy float32 boxes, 0-based labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import cv2
import numpy as np
from tqdm import tqdm

from edge.errors import DataError

from .coco import CocoSet, classes_hint, load_coco

# The pixels annotators saw, at the file's own depth (checked: the model takes 8 bits).
_READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_ANYDEPTH


@dataclass
class Sample:
    image: np.ndarray  # [H, W, 3] uint8, RGB
    boxes: np.ndarray  # [N, 4] float32, xyxy pixels
    labels: np.ndarray  # [N] int64, 0-based index into the set's class names
    image_id: int


def depth_problem(img: np.ndarray) -> Optional[str]:
    """None for an 8-bit image, else why it is refused: OpenCV would read a 16-bit one as
    value / 256, and a 12-bit camera's frame saved in 16 bits would train black."""
    if img.dtype == np.uint8:
        return None
    return (
        f"a {img.dtype} image (largest value {img.max():g}): training and the unit read "
        "images as 8 bits; write the set as 8-bit images, as the unit's camera delivers "
        "its frames"
    )


def decode(path: Path, flags: int) -> Union[np.ndarray, str]:
    """The image in `path` decoded with OpenCV's imread `flags`, or why it is not one.

    Decoded from its bytes, not by `cv2.imread`: imread decodes a JPEG cut short (a copy or
    a download interrupted) without an error, its missing rows grey, and boxes labelled on
    them would train on nothing; decoding from memory refuses it."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError as e:  # missing, a folder, no permission
        return e.strerror or type(e).__name__
    img = cv2.imdecode(data, flags) if data.size else None
    if img is not None:
        return img
    raw = data.tobytes()
    # Scan data escapes 0xFF, so an end-of-image marker (FFD9) after the last start of
    # scan (FFDA) ends the image; an EXIF thumbnail's lies before it.
    if raw.startswith(b"\xff\xd8") and raw.rfind(b"\xff\xd9") < raw.rfind(b"\xff\xda"):
        return "a JPEG cut short, without its end-of-image marker: copy it again"
    return "not a decodable image"


def read_rgb(path: Path) -> np.ndarray:
    """Read any 8-bit image OpenCV decodes (grey too) as [H, W, 3] uint8 RGB."""
    img = decode(path, _READ_FLAGS)
    if isinstance(img, str):
        raise DataError(f"{path}: {img}")
    problem = depth_problem(img)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class CocoDetection:
    """Indexable COCO set in our layout (`root/annotations.json`, `root/images/`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found")
        self.coco: CocoSet = load_coco(self.root)
        self.class_names: List[str] = [c.name for c in self.coco.categories]
        self._label = {c.id: i for i, c in enumerate(self.coco.categories)}

    def __len__(self) -> int:
        return len(self.coco.images)

    def require_boxes(self, why: str) -> CocoDetection:
        """This set, refused where it holds no labelled box: COCO's AP and AR are undefined
        there, and its -1, reported as 0, would read as a model that finds nothing."""
        if self.coco.num_annotations == 0:
            raise DataError(f"{self.root}: no labelled boxes in its {len(self)} images: {why}")
        return self

    def __getitem__(self, index: int) -> Sample:
        rec = self.coco.images[index]
        image = read_rgb(self.root / "images" / rec.file_name)
        if image.shape[:2] != (rec.height, rec.width):
            raise DataError(
                f"{self.root / 'images' / rec.file_name}: is {image.shape[1]}x{image.shape[0]}, "
                f"annotations say {rec.width}x{rec.height}"
            )
        anns = self.coco.annotations.get(rec.id, [])
        boxes = np.array([a.bbox for a in anns], dtype=np.float32).reshape(-1, 4)  # [N, 4] xywh
        boxes[:, 2:] += boxes[:, :2]  # -> xyxy
        labels = np.array([self._label[a.category_id] for a in anns], dtype=np.int64)
        return Sample(image, boxes, labels, rec.id)

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        """The training view's source image (a ReplayMix draws some with `rng`)."""
        return self[index]

    def file_name(self, index: int) -> str:
        return self.coco.images[index].file_name

    def image(self, index: int) -> np.ndarray:
        return self[index].image


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageFolder:
    """Unlabelled images (`root/images/*`, else `root/*`) in name order, read as a COCO set's
    are: a line's own recordings, for what needs pixels and no boxes (INT8 calibration)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data folder not found")
        base = self.root / "images" if (self.root / "images").is_dir() else self.root
        files = sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{base}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.files: List[Path] = files

    def __len__(self) -> int:
        return len(self.files)

    def file_name(self, index: int) -> str:
        return self.files[index].name

    def image(self, index: int) -> np.ndarray:
        return read_rgb(self.files[index])


def require_readable(
    data: Union[CocoDetection, ImageFolder], indices: Sequence[int], what: str
) -> None:
    """DataError naming every image of `data` at `indices` that cannot be read (a JPEG cut
    short, not an image, a size its annotations do not give): checked before a long pass,
    which would stop at the first of them after minutes, and one at a time."""
    bad: List[str] = []
    for i in tqdm(indices, desc=f"reading {what}", unit="img", leave=False):
        try:
            data.image(int(i))
        except DataError as e:
            bad.append(str(e))
    if bad:
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(
            f"{len(bad)} of the {len(indices)} {what} cannot be read: "
            + "; ".join(bad[:5])
            + f"{more} (copy them again, or remove them)"
        )


def open_images(root: Path) -> Union[CocoDetection, ImageFolder]:
    """A COCO set where `root` holds `annotations.json`, else a folder of unlabelled images."""
    return CocoDetection(root) if (Path(root) / "annotations.json").exists() else ImageFolder(root)


class ReplayMix:
    """A site's own set with a share of every epoch drawn from a replay set (the images the
    model learnt from), so fine-tuning on a few site images does not forget the rest.

    Indices below len(own) are the own images, each once per epoch; the remaining indices
    draw replay images by the caller's (seed, epoch, index) generator, so each epoch sees
    other ones and a run stays repeatable.
    """

    def __init__(self, own: CocoDetection, replay: CocoDetection, share: float) -> None:
        if replay.class_names != own.class_names:
            raise DataError(
                f"{replay.root}: replay classes {replay.class_names} differ from "
                f"{own.root}'s {own.class_names}"
                + classes_hint(replay.class_names, own.class_names)
            )
        if len(replay) == 0:
            raise DataError(f"{replay.root}: the replay set has no images")
        self.own, self.replay = own, replay
        self.class_names = own.class_names
        self.n_replay = max(1, round(len(own) * share / (1.0 - share)))

    def __len__(self) -> int:
        return len(self.own) + self.n_replay

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        if index < len(self.own):
            return self.own[index]
        return self.replay[int(rng.integers(len(self.replay)))]


TrainingData = Union[CocoDetection, ReplayMix]


def open_training_data(
    root: Path, replay: Optional[Path] = None, share: float = 0.5
) -> TrainingData:
    """The training set, mixed with `replay` when given."""
    own = CocoDetection(root)
    return own if replay is None else ReplayMix(own, CocoDetection(replay), share)
