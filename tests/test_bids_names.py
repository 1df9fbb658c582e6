"""BIDS names: stems and extensions, partners beside a file, entities and suffixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mri2mri.runtime.bids.names import (
    NIFTI_EXTENSIONS,
    build_name,
    bval_path,
    bvec_path,
    parse_name,
    partner,
    sidecar_path,
    split_name,
    suffix_of,
)
from mri2mri.runtime.registration.via import contrast_from_name


@pytest.mark.parametrize(("path", "stem", "ext"), [
    ("sub-01_T1w.nii.gz", "sub-01_T1w", ".nii.gz"),
    ("sub-01_T1w.nii", "sub-01_T1w", ".nii"),
    ("/data/sub-01/dwi/sub-01_dwi.nii.gz", "sub-01_dwi", ".nii.gz"),
    (Path("a.b/sub-01_T1w.json"), "sub-01_T1w", ".json"),
    ("my.scan.nii.gz", "my.scan", ".nii.gz"),  # only the last extension (and .gz) goes
    ("README", "README", ""),
])
def test_split_name(path: str | Path, stem: str, ext: str) -> None:
    assert split_name(path) == (stem, ext)


@pytest.mark.parametrize("name", ["sub-01_T2w.nii.gz", "sub-01_T2w.nii"])
def test_sidecar_and_partners_keep_the_folder_and_stem(tmp_path: Path, name: str) -> None:
    image = tmp_path / "anat" / name
    assert sidecar_path(image) == tmp_path / "anat" / "sub-01_T2w.json"
    assert partner(str(image), ".bvec") == tmp_path / "anat" / "sub-01_T2w.bvec"


@pytest.mark.parametrize("ext", NIFTI_EXTENSIONS)
def test_bval_and_bvec_partners_present_and_absent(tmp_path: Path, ext: str) -> None:
    dwi = tmp_path / f"sub-01_run-1_dwi{ext}"
    dwi.touch()
    assert bval_path(dwi) is None and bvec_path(dwi) is None
    (tmp_path / "sub-01_run-1_dwi.bval").write_text("0 1000\n")
    assert bval_path(dwi) == tmp_path / "sub-01_run-1_dwi.bval"
    assert bvec_path(dwi) is None  # each partner is looked for on its own
    (tmp_path / "sub-01_run-1_dwi.bvec").write_text("1 0\n0 1\n0 0\n")
    assert bvec_path(str(dwi)) == tmp_path / "sub-01_run-1_dwi.bvec"
    # another run's b-values are not this file's
    assert bval_path(tmp_path / f"sub-01_run-2_dwi{ext}") is None


@pytest.mark.parametrize(("name", "entities", "suffix", "ext"), [
    ("sub-01_T1w.nii.gz", {"sub": "01"}, "T1w", ".nii.gz"),
    ("sub-01_ses-2_acq-fast_run-3_T2w.nii", {"sub": "01", "ses": "2", "acq": "fast", "run": "3"},
     "T2w", ".nii"),
    ("sub-A1_ses-pre_desc-mri2mri_b0.json", {"sub": "A1", "ses": "pre", "desc": "mri2mri"},
     "b0", ".json"),
])
def test_entities_round_trip(name: str, entities: dict[str, str], suffix: str,
                             ext: str) -> None:
    assert parse_name(name) == (entities, suffix, ext)
    assert build_name(*parse_name(name)) == name


def test_build_name_orders_entities_like_the_specification() -> None:
    name = build_name({"desc": "mri2mri", "run": "2", "foo": "x", "sub": "01", "ses": "1"},
                      "T2w", ".nii.gz")
    assert name == "sub-01_ses-1_run-2_desc-mri2mri_foo-x_T2w.nii.gz"
    assert parse_name(name)[0] == {"sub": "01", "ses": "1", "run": "2", "desc": "mri2mri",
                                   "foo": "x"}


@pytest.mark.parametrize("name", ["sub-01_T1w", "sub-01__T1w.nii.gz",
                                  "sub-01_run-_T1w.nii.gz", "sub-01 T1w.nii.gz"])
def test_non_bids_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a BIDS file name"):
        parse_name(name)


@pytest.mark.parametrize(("path", "suffix"), [
    ("sub-1_ses-2_T1w.nii.gz", "T1w"),
    ("/x/sub-1_dwi.nii", "dwi"),
    ("t1.nii.gz", "t1"),  # a name without entities is its own suffix
    ("my.scan_t2.nii", "t2"),
    ("b=0.nii.gz", "b=0"),
    ("subject 3 T1.nii.gz", None),  # not a plain word
    ("sub-1_.nii.gz", None),
])
def test_suffix_of_a_nifti_name(path: str, suffix: str | None) -> None:
    assert suffix_of(path, NIFTI_EXTENSIONS) == suffix


def test_suffix_of_other_extensions() -> None:
    assert suffix_of("sub-1_T1w.json") == "T1w"
    assert suffix_of("sub-1_T1w.json", NIFTI_EXTENSIONS) is None
    assert suffix_of("sub-1_T1w.nii.gz.bak", NIFTI_EXTENSIONS) is None
    assert suffix_of("sub-1_T1w", NIFTI_EXTENSIONS) is None


@pytest.mark.parametrize(("path", "contrast"), [
    ("sub-1_T1w.nii.gz", "T1w"), ("t2.nii", "T2w"), ("scan_b=0.nii.gz", "b0"),
    ("sub-1_dwi.nii.gz", "b0"), ("sub-1_FLAIR.nii.gz", None), ("sub-1_T1w.json", None),
])
def test_registration_reads_the_contrast_from_the_suffix(path: str, contrast: str | None
                                                         ) -> None:
    assert contrast_from_name(path) == contrast
