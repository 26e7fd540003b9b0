"""`retired.json`: the rows `fod audit archive` moved out of an audit folder, where the
folder's trail now starts.

Signed with the audit's key: the file says where `verify` may start, so without a
signature anyone who can write the folder could remove its oldest files and claim them
archived. With `--public-key`, `verify` takes an unsigned or edited one for that."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Tuple

from .audit import GENESIS, AuditError
from .fsutil import atomic_write_json

RETIRED = "retired.json"


@dataclass(frozen=True)
class Retired:
    """The rows `fod audit archive` moved out of a folder: up to `seq` (its row hash
    `hash`), in the files named, to `to`; `sig`: the audit key's signature of the rest."""

    seq: int
    hash: str
    files: Tuple[str, ...] = ()
    to: str = ""
    sig: str = ""


def retired_payload(r: Retired) -> bytes:
    """What the signature covers: every field but itself, canonical JSON."""
    fields = {"seq": r.seq, "hash": r.hash, "files": list(r.files), "to": r.to}
    return b"pharma-fod audit retired " + json.dumps(fields, sort_keys=True).encode()


def read_retired(folder: Path) -> Retired:
    """Where the trail in `folder` starts: after its retired rows, else at the genesis."""
    path = folder / RETIRED
    if not path.exists():
        return Retired(0, GENESIS)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        files = tuple(str(f) for f in d["files"])
        return Retired(
            int(d["seq"]), str(d["hash"]), files, str(d.get("to", "")), str(d.get("sig", ""))
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AuditError(f"{path}: unreadable: {e}") from None


def write_retired(folder: Path, r: Retired, key: Optional[Any]) -> None:
    """`r` as `folder`/retired.json (atomically), signed with `key` (an Ed25519 private key
    object) where given."""
    if key is not None:
        r = replace(r, sig=key.sign(retired_payload(r)).hex())
    d = asdict(r)
    d["files"] = list(r.files)
    if not r.sig:
        del d["sig"]
    atomic_write_json(folder / RETIRED, d)


def check_retired(folder: Path, r: Retired, pub: Any) -> None:
    """AuditError unless `r` (read from `folder`) carries `pub`'s signature."""
    from cryptography.exceptions import InvalidSignature

    where = folder / RETIRED
    if not r.sig:
        raise AuditError(
            f"{where}: unsigned, while a public key was given (archived without "
            "--signing-key, or written by hand)"
        )
    try:
        pub.verify(bytes.fromhex(r.sig), retired_payload(r))
    except (InvalidSignature, ValueError):
        raise AuditError(f"{where}: bad signature (edited, or signed by another key)") from None
