"""Find IXI images in the five public archives (``IXI-T1.tar`` ...) or extracted folders.

Archives are indexed once (member name, byte offset, size) and each image is read
straight from the archive into memory when its subject is processed: nothing is
extracted to disk, and worker processes only need the small picklable `FileRef`.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.core.errors import InputError, exception_summary

from .names import IXIName, looks_like_nifti, parse_name


@dataclass(frozen=True)
class FileRef:
    """Where one image lives: a file, or a member of a tar archive."""

    container: Path
    member: str | None = None  # None: `container` is the file itself
    offset: int | None = None  # start of the member's data in an uncompressed tar
    size: int | None = None

    @property
    def name(self) -> str:
        return Path(self.member).name if self.member else self.container.name

    def __str__(self) -> str:
        return f"{self.container}:{self.member}" if self.member else str(self.container)

    def read_bytes(self) -> bytes:
        """The file's bytes; from a tar by seeking to the member (or via tarfile if compressed)."""
        try:
            if self.member is None:
                return self.container.read_bytes()
            if self.offset is not None and self.size is not None:
                with open(self.container, "rb") as fh:
                    fh.seek(self.offset)
                    data = fh.read(self.size)
                if len(data) != self.size:
                    raise InputError(str(self), f"archive is truncated ({len(data)} of {self.size} "
                                           "bytes of this member present)")
                return data
            with tarfile.open(self.container, "r:*") as tar:
                fh = tar.extractfile(self.member)
                if fh is None:
                    raise InputError(str(self), "archive member is not a regular file")
                return fh.read()
        except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
            raise InputError(str(self), f"cannot read ({exception_summary(exc)})") from None


def read_image(ref: FileRef) -> nib.Nifti1Image:
    """Load a NIfTI image fully into memory; any corruption becomes an InputError naming it."""
    raw = ref.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        img = nib.Nifti1Image.from_bytes(raw)
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError,
            gzip.BadGzipFile) as exc:
        raise InputError(str(ref), "corrupted or not a NIfTI image "
                                   f"({exception_summary(exc)})") from None
    if not np.isfinite(np.linalg.det(img.affine[:3, :3])) or \
            abs(np.linalg.det(img.affine[:3, :3])) < 1e-6:
        raise InputError(str(ref), "affine is not invertible (zero or undefined voxel size)")
    return nib.Nifti1Image(data, img.affine, img.header)


@dataclass
class SourceIndex:
    """The IXI images of one modality found in one source, and what could not be used."""

    source: Path
    modality: str
    images: list[tuple[IXIName, FileRef]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _tar_refs(path: Path) -> tuple[list[FileRef], list[str]]:
    problems: list[str] = []
    refs: list[FileRef] = []
    try:
        tar = tarfile.open(path, "r:")  # uncompressed: members can be read by offset
        compressed = False
    except tarfile.ReadError:
        try:
            tar = tarfile.open(path, "r:*")
            compressed = True
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise InputError(path, f"unreadable archive ({exception_summary(exc)})") from None
    except OSError as exc:
        raise InputError(path, f"unreadable archive ({exception_summary(exc)})") from None
    with tar:
        try:
            for info in tar:
                if info.isfile():
                    refs.append(FileRef(path, info.name, None if compressed else info.offset_data,
                                        None if compressed else info.size))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            problems.append(f"{path}: archive is damaged after {len(refs)} members "
                            f"({exception_summary(exc)}); later members are missing")
    if not refs and not problems:
        raise InputError(path, "archive holds no files")
    return refs, problems


def index_source(path: str | Path, modality: str) -> SourceIndex:
    """Index the `modality` images ("T1", "T2", "PD", "MRA" or "DTI") of a tar or a folder.

    Images of other modalities are ignored (one folder may hold everything);
    NIfTI files whose names do not parse are reported, not guessed at.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, f"{modality} source not found")
    index = SourceIndex(path, modality)
    if path.is_dir():
        refs = [FileRef(p) for p in sorted(path.rglob("*.nii*")) if p.is_file()]
    elif tarfile.is_tarfile(path) or path.name.endswith((".tar", ".tar.gz", ".tgz")):
        refs, index.problems = _tar_refs(path)
    elif looks_like_nifti(path.name):
        refs = [FileRef(path)]
    else:
        raise InputError(path, f"{modality} source is neither a folder, a tar archive "
                               "nor a NIfTI file")
    for ref in refs:
        if not looks_like_nifti(ref.name):
            continue
        try:
            name = parse_name(ref.name)
        except ValueError as exc:
            index.problems.append(f"{ref}: {exc}")
            continue
        if name.modality == modality:
            index.images.append((name, ref))
    return index
