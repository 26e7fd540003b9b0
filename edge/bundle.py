"""Deployable bundles: a folder (or .tar.gz) with manifest.json, the models and the cache.

The manifest names every file with its sha256; verification refuses a missing, extra
or altered file by name, and, where the unit holds a public key, an unsigned or
wrongly signed manifest. Engines are not bundled: they are built on the unit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from . import signing
from .errors import FodError
from .fsutil import FILE_MODE, atomic_write_bytes, sha256_file, staged_dir
from .model_info import ModelInfo

FORMAT = "pharma-fod/bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # raw 64-byte Ed25519 signature of manifest.json's bytes
# What each bundled file is for; `reference`: frames with known objects (edge.reference).
ROLES = ("fp32", "int8", "int8_cpu", "cache", "report", "reference")


@dataclass(frozen=True)
class Bundle:
    root: Path  # the verified folder (a temp copy for a tarball)
    manifest: Dict[str, Any]

    def file(self, role: str) -> Optional[Path]:
        for name, entry in self.manifest["files"].items():
            if entry["role"] == role:
                return self.root / name
        return None


def model_fields(info: ModelInfo) -> Dict[str, Any]:
    """The manifest's account of the one model a bundle holds (in up to three precisions)."""
    return {
        "classes": list(info.class_names),
        "input_size": list(info.input_size),
        "input_layout": info.input_layout,
        "level_counts": list(info.level_counts),
        "source_checkpoint_sha256": info.checkpoint_sha256,
    }


def model_mismatches(
    info: ModelInfo, fields: Dict[str, Any], against: str = "the manifest"
) -> List[str]:
    """Where a model's own metadata disagrees with `fields` (a manifest, or `model_fields`
    of another model). A bundle is one export of one checkpoint: an INT8 model of another
    size, layout or checkpoint than its FP32 would make the unit's TensorRT and CPU paths
    run different detectors under one name. Fields an older manifest lacks are not compared."""
    return [
        f"{k} {v!r} where {against} has {fields[k]!r}"
        for k, v in model_fields(info).items()
        if k in fields and fields[k] != v
    ]


def create_bundle(
    out: Path,
    files: Dict[str, Path],
    meta: Dict[str, Any],
    sign_key: Optional[Path] = None,
    tar: bool = False,
) -> Path:
    """Copy `files` (role -> path) into a new bundle at `out`, manifest included."""
    for role, src in files.items():
        if role not in ROLES:
            raise FodError(f"unknown bundle role {role!r}")
        if not src.is_file():
            raise FodError(f"{src}: file not found")
    names = [src.name for src in files.values()]
    if len(set(names)) != len(names) or MANIFEST in names or SIGNATURE in names:
        raise FodError(
            f"bundle file names must be distinct and not {MANIFEST}/{SIGNATURE}: {names}"
        )
    target = (
        out.with_name(out.name + ".tar.gz") if tar and not out.name.endswith(".tar.gz") else out
    )
    if tar and target.exists():
        raise FodError(f"{target}: exists; refusing to overwrite")
    with staged_dir(out if not tar else Path(tempfile.mkdtemp()) / "bundle") as tmp:
        entries = {}
        for role, src in files.items():
            shutil.copyfile(src, tmp / src.name)
            entries[src.name] = {
                "role": role,
                "sha256": sha256_file(tmp / src.name),
                "size": (tmp / src.name).stat().st_size,
            }
        manifest = {"format": FORMAT, **meta, "files": entries}
        data = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        atomic_write_bytes(tmp / MANIFEST, data)
        if sign_key is not None:
            atomic_write_bytes(tmp / SIGNATURE, signing.sign(data, sign_key))
        if tar:
            _write_tar(tmp, target)
    if tar:
        shutil.rmtree(Path(tmp).parent, ignore_errors=True)
    return target


def _write_tar(folder: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with open(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tf:
            for p in sorted(folder.iterdir()):
                tf.add(p, arcname=f"bundle/{p.name}", recursive=False)
        os.chmod(tmp, FILE_MODE)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def open_bundle(path: Path, public_key: Optional[Path] = None) -> Iterator[Bundle]:
    """Verify and yield a bundle (folder or .tar.gz); every loader goes through here."""
    if not path.exists():
        raise FodError(f"{path}: bundle not found")
    if path.is_file():
        with tempfile.TemporaryDirectory() as work:
            try:
                with tarfile.open(path) as tf:
                    for m in tf.getmembers():
                        parts = Path(m.name).parts
                        if not m.isfile() or len(parts) != 2 or parts[0] != "bundle":
                            raise FodError(
                                f"{path}: unexpected member {m.name!r} in bundle tarball"
                            )
                        src = tf.extractfile(m)
                        if src is None:
                            raise FodError(f"{path}: member {m.name!r} cannot be read")
                        (Path(work) / parts[1]).write_bytes(src.read())
            except (tarfile.TarError, EOFError, OSError, ValueError) as e:
                raise FodError(f"{path}: not a readable bundle tarball: {e}") from None
            yield verify_bundle(Path(work), public_key, label=str(path))
        return
    yield verify_bundle(path, public_key)


def verify_bundle(
    root: Path, public_key: Optional[Path] = None, label: Optional[str] = None
) -> Bundle:
    """Check the manifest, every hash, no missing or extra file, and the signature if keyed."""
    label = label or str(root)
    man_path = root / MANIFEST
    if not man_path.is_file():
        raise FodError(f"{label}: no {MANIFEST}")
    data = man_path.read_bytes()
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise FodError(f"{label}/{MANIFEST}: not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise FodError(f"{label}/{MANIFEST}: not a pharma-fod bundle manifest")
    present = {p.name for p in root.iterdir()} - {MANIFEST, SIGNATURE}
    for name in sorted(set(manifest["files"]) - present):
        raise FodError(f"{label}/{name}: listed in the manifest but missing")
    for name in sorted(present - set(manifest["files"])):
        raise FodError(f"{label}/{name}: extra file not in the manifest")
    for name, entry in sorted(manifest["files"].items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise FodError(f"{label}/{MANIFEST}: entry {name!r} has no sha256")
        if not isinstance(entry.get("role"), str):
            raise FodError(f"{label}/{MANIFEST}: entry {name!r} has no role")
        if sha256_file(root / name) != entry["sha256"]:
            raise FodError(
                f"{label}/{name}: sha256 does not match the manifest (corrupt or altered)"
            )
    if public_key is not None:
        sig = root / SIGNATURE
        if not sig.is_file():
            raise FodError(
                f"{label}: unsigned bundle, and this unit requires a signature ({public_key})"
            )
        signing.verify(data, sig.read_bytes(), public_key, label)
    return Bundle(root, manifest)
