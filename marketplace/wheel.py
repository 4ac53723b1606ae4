"""Wheel safety: what a published package must be before anything else looks inside it.

Checked, in order, on the bytes alone (nothing is extracted to disk here):
- a zip archive (else WHEEL_INVALID), within the size, file-count and uncompressed-size limits
  (else WHEEL_UNSAFE: a zip bomb is refused by its declared sizes before it is inflated);
- every name relative and inside the archive: no absolute paths, drive letters, backslashes,
  `..` or empty segments, symlinks or duplicates, names compared case-folded (else WHEEL_UNSAFE);
- a wheel: exactly one `<name>-<version>.dist-info/` with WHEEL, METADATA and RECORD;
- every file's bytes match its CRC and its RECORD hash, and every file is in RECORD (else
  PACKAGE_TAMPERED: a file changed after the wheel was built);
- the manifest: `alphintra_manifest.json` at the root of the plugin's top-level package
  (`<package>/alphintra_manifest.json`, shipped as package data) - exactly one in the wheel;
- one entry point in group `alphintra.plugins` in `entry_points.txt`; `check_entry_point`
  then requires its name to be the manifest's id and its value the manifest's entry point.

The default limits keep a wheel's base64 under the HTTP body limit (`max_body_bytes`, 1 MB):
700 kB of wheel is about 933 kB of base64.
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import json
import stat
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from marketplace.errors import ToolkitError

MANIFEST_FILE = "alphintra_manifest.json"
ENTRY_POINT_GROUP = "alphintra.plugins"


class WheelInvalid(ToolkitError):
    code = "WHEEL_INVALID"


class WheelUnsafe(ToolkitError):
    code = "WHEEL_UNSAFE"


class PackageTampered(ToolkitError):
    code = "PACKAGE_TAMPERED"


@dataclass(frozen=True)
class WheelLimits:
    max_bytes: int = 700_000
    max_files: int = 500
    max_unpacked_bytes: int = 20_000_000
    max_file_bytes: int = 5_000_000


@dataclass(frozen=True)
class WheelContents:
    files: dict[str, bytes]  # name → bytes, in archive order
    dist_info: str  # e.g. "acme_news-1.0.0.dist-info"
    manifest_path: str
    manifest_data: Any  # the decoded JSON, not yet validated
    entry_points: dict[str, str]  # name → value, group alphintra.plugins

    def digests(self) -> dict[str, str]:
        """SHA-256 (hex) of every file: what a signature covers."""
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.files.items()}


def _unsafe_name(name: str) -> str | None:
    if not name or "\\" in name or "\x00" in name:
        return "has a backslash or NUL"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is absolute"
    if any(part in ("..", ".") for part in name.rstrip("/").split("/")):
        return "leaves the archive (..)"
    if "" in name.rstrip("/").split("/"):
        return "has an empty path segment (//), which unpacks onto another name"
    return None


def _normal(name: str) -> str:
    """What a file system may take the name to be: `a//b` is `a/b`, and on case-insensitive or
    normalising file systems `A.py` is `a.py`, `é` is `é`."""
    return unicodedata.normalize("NFC", name.rstrip("/")).casefold()


def read_wheel(data: bytes, limits: WheelLimits = WheelLimits()) -> WheelContents:
    if len(data) > limits.max_bytes:
        raise WheelUnsafe(f"the wheel is {len(data)} bytes; the limit is {limits.max_bytes}",
                          details={"limit": limits.max_bytes, "size": len(data)})
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise WheelInvalid(f"not a wheel: not a zip archive ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_files:
            raise WheelUnsafe(f"the wheel has {len(infos)} entries; the limit is {limits.max_files}")
        if sum(i.file_size for i in infos) > limits.max_unpacked_bytes:
            raise WheelUnsafe(f"the wheel unpacks to more than {limits.max_unpacked_bytes} bytes")
        seen: set[str] = set()
        for info in infos:
            problem = _unsafe_name(info.filename)
            if problem:
                raise WheelUnsafe(f"unsafe path {info.filename!r}: it {problem}",
                                  details={"path": info.filename})
            if stat.S_ISLNK(info.external_attr >> 16):
                raise WheelUnsafe(f"{info.filename!r} is a symbolic link",
                                  details={"path": info.filename})
            if _normal(info.filename) in seen:
                raise WheelUnsafe(f"{info.filename!r} appears twice (names compared without case)",
                                  details={"path": info.filename})
            if info.file_size > limits.max_file_bytes:
                raise WheelUnsafe(f"{info.filename!r} is over {limits.max_file_bytes} bytes")
            seen.add(_normal(info.filename))
        files: dict[str, bytes] = {}
        for info in infos:
            if info.is_dir():
                continue
            try:
                files[info.filename] = archive.read(info)
            except (zipfile.BadZipFile, zlib.error) as exc:  # CRC or deflate: bytes changed
                raise PackageTampered(f"{info.filename!r} is corrupt or was changed ({exc})",
                                      details={"path": info.filename}) from None
            except (NotImplementedError, RuntimeError, OSError, EOFError) as exc:
                raise WheelInvalid(f"{info.filename!r} cannot be read ({exc})") from None
    dist_infos = {name.split("/", 1)[0] for name in files
                  if name.split("/", 1)[0].endswith(".dist-info") and "/" in name}
    if len(dist_infos) != 1:
        raise WheelInvalid(f"not a wheel: expected one .dist-info directory, found {len(dist_infos)}")
    dist_info = dist_infos.pop()
    for required in ("WHEEL", "METADATA", "RECORD"):
        if f"{dist_info}/{required}" not in files:
            raise WheelInvalid(f"not a wheel: {dist_info}/{required} is missing")
    _check_record(files, dist_info)
    manifests = [name for name in files if name.count("/") == 1 and name.endswith("/" + MANIFEST_FILE)
                 and not name.startswith(dist_info)]
    if len(manifests) != 1:
        raise WheelInvalid(f"expected one <package>/{MANIFEST_FILE} in the wheel, found "
                           f"{len(manifests)}")
    try:
        manifest_data = json.loads(files[manifests[0]].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        from marketplace.manifest import ManifestInvalid

        raise ManifestInvalid(f"{manifests[0]} is not JSON: {exc}",
                              details={"errors": [{"path": "$", "message": str(exc)}]}) from None
    return WheelContents(files=files, dist_info=dist_info, manifest_path=manifests[0],
                         manifest_data=manifest_data,
                         entry_points=_entry_points(files.get(f"{dist_info}/entry_points.txt")))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _check_record(files: dict[str, bytes], dist_info: str) -> None:
    record_name = f"{dist_info}/RECORD"
    try:
        rows = list(csv.reader(io.StringIO(files[record_name].decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise WheelInvalid(f"{record_name} cannot be read: {exc}") from None
    recorded: dict[str, str] = {}
    for row in rows:
        if not row:
            continue
        if len(row) != 3:
            raise WheelInvalid(f"{record_name}: malformed row {row!r}")
        recorded[row[0]] = row[1]
    unsigned_ok = {record_name, f"{dist_info}/RECORD.jws", f"{dist_info}/RECORD.p7s"}
    for name, data in files.items():
        if name in unsigned_ok:
            continue
        expected = recorded.get(name)
        if not expected:
            raise PackageTampered(f"{name!r} is not listed in RECORD", details={"path": name})
        if not expected.startswith("sha256="):
            raise WheelInvalid(f"{record_name}: {name!r} is not hashed with sha256")
        if expected != _record_hash(data):
            raise PackageTampered(f"{name!r} does not match its RECORD hash: it changed after the "
                                  "wheel was built", details={"path": name})
    missing = [name for name in recorded if name not in files and name not in unsigned_ok]
    if missing:
        raise WheelInvalid(f"RECORD lists files that are not in the wheel: {missing[:5]}")


def _entry_points(data: bytes | None) -> dict[str, str]:
    if data is None:
        return {}
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # names are case-sensitive
    try:
        parser.read_string(data.decode("utf-8"))
    except (UnicodeDecodeError, configparser.Error) as exc:
        raise WheelInvalid(f"entry_points.txt cannot be read: {exc}") from None
    if not parser.has_section(ENTRY_POINT_GROUP):
        return {}
    return {name: value.strip() for name, value in parser.items(ENTRY_POINT_GROUP)}


def check_entry_point(contents: WheelContents, plugin_id: str, entry_point: str) -> None:
    """The wheel's `alphintra.plugins` entry point must be `<manifest id> = <manifest entry_point>`,
    and the manifest must sit in that entry point's top-level package."""
    eps = contents.entry_points
    if list(eps) != [plugin_id] or eps[plugin_id] != entry_point:
        raise WheelInvalid(
            f"the wheel's [{ENTRY_POINT_GROUP}] entry points are {eps or 'missing'}; expected "
            f"exactly {plugin_id} = {entry_point}", details={"entryPoints": eps})
    package = entry_point.split(":", 1)[0].split(".", 1)[0]
    if contents.manifest_path != f"{package}/{MANIFEST_FILE}":
        raise WheelInvalid(f"the manifest is at {contents.manifest_path}; expected it in the entry "
                           f"point's package, {package}/{MANIFEST_FILE}")
