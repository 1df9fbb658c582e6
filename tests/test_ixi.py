"""IXI importer: real IXI diffusion files (b-value quirk), a fake IXI tree from the demo cohort.

The real diffusion data are the crop of IXI025 shipped in tests/data; the two
full-size subjects are used, when present, by the tests marked slow.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import typer
from scipy.spatial.transform import Rotation

from mri2mri.data.cohort import Cohort
from mri2mri.data.ixi.cli import ixi
from mri2mri.data.ixi.dwi import assemble_dwi, read_table
from mri2mri.data.ixi.importer import import_ixi
from mri2mri.data.ixi.layout import ixi_split_sizes
from mri2mri.data.ixi.names import parse_name
from mri2mri.data.ixi.sources import index_source, read_image
from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.resample import same_grid
from mri2mri.runtime.registration import with_settings

#: Real IXI diffusion data in the repository: a crop of one subject (see its README).
IXI_DTI_CROP = Path(__file__).parent / "data" / "ixi-dti-crop"
REAL = {"IXI002": "IXI002-Guys-0828", "IXI025": "IXI025-Guys-0852"}
#: The subject whose DTI crop ships with the tests.
CROPPED = "IXI025"
#: The known motion given to IXI002's T1: 4/-3/5 degrees about x/y/z and (3, -4, 2) mm.
MOTION = np.eye(4)
MOTION[:3, :3] = Rotation.from_euler("xyz", [4, -3, 5], degrees=True).as_matrix()
MOTION[:3, 3] = [3.0, -4.0, 2.0]
QUICK = with_settings("fast", sampling_proportion=0.3)


@pytest.fixture(scope="module")
def dti_dir() -> Path:
    """IXI025's 17 DTI volumes (cropped) and IXI's bvals.txt/bvecs.txt, from the repository."""
    return IXI_DTI_CROP


@pytest.fixture(scope="module")
def full_dti_dir(shared_dir: Path) -> Path:
    path = shared_dir / "ixi-dti"
    assert (path / "bvals.txt").is_file(), f"real IXI DTI files missing under {path}"
    return path


def _copy_as(img_path: Path, dest: Path, affine: np.ndarray | None = None) -> None:
    img = nib.load(img_path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine if affine is None
                             else affine, img.header), dest)


@pytest.fixture(scope="module")
def fake_tree(demo_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo subjects renamed as IXI002/IXI025; only IXI002 has a T1, moved by MOTION."""
    tree = tmp_path_factory.mktemp("ixi") / "tree"
    tree.mkdir()
    demo = sorted(demo_cohort.glob("sub-*"))
    for sub, name in zip(demo[:2], REAL.values(), strict=True):
        anat = sub / "anat"
        _copy_as(anat / f"{sub.name}_T2w.nii.gz", tree / f"{name}-T2.nii.gz")
        _copy_as(anat / f"{sub.name}_PDw.nii.gz", tree / f"{name}-PD.nii.gz")
    t1 = nib.load(demo[0] / "anat" / f"{demo[0].name}_T1w.nii.gz")
    _copy_as(demo[0] / "anat" / f"{demo[0].name}_T1w.nii.gz",
             tree / f"{REAL['IXI002']}-T1.nii.gz", MOTION @ t1.affine)
    return tree


@pytest.fixture(scope="module")
def imported(fake_tree: Path, dti_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ixi-out") / "ixi"
    # Sparse metric sampling: 5x faster than the "fast" preset on this tiny 3 mm cohort
    # (the presets themselves are tested with the registration module).
    report = import_ixi(t1=fake_tree, t2=fake_tree, pd=fake_tree, dti=dti_dir, out=out,
                        settings=QUICK)
    return out, report


def test_names_parse_and_reject() -> None:
    name = parse_name("IXI002-Guys-0828-DTI-07.nii.gz")
    assert (name.subject, name.site, name.session, name.modality, name.volume) == \
        ("IXI002", "Guys", "0828", "DTI", 7)
    assert parse_name("IXI651-HH-2998-MRA.nii.gz").contrast == "angio"
    for bad in ("IXI002-Guys-T1.nii.gz", "IXI002-Guys-0828-T1-03.nii.gz",
                "IXI002-Guys-0828-DTI.nii.gz", "sub-01_T1w.nii.gz"):
        with pytest.raises(ValueError, match="IXI|DTI"):
            parse_name(bad)


def test_split_sizes_follow_the_study() -> None:
    assert ixi_split_sizes(578) == (338, 161, 79)
    train, val, test = ixi_split_sizes(40)
    assert train + val + test == 40 and val >= 1 and 0.1 < test / (train + test) < 0.3


def _dti_volumes(dti_dir: Path, subject: str) -> list[tuple[int, nib.Nifti1Image, str]]:
    index = index_source(dti_dir, "DTI")
    return [(n.volume, read_image(r), r.name) for n, r in index.images if n.subject == subject]


def test_quirk_volume_found_on_real_subjects(imported, dti_dir: Path) -> None:
    out, report = imported
    bvals, bvecs = read_table(dti_dir / "bvals.txt", dti_dir / "bvecs.txt")
    for subject, prefix in [(CROPPED, REAL[CROPPED])]:
        dwi = out / f"sub-{subject}" / "dwi"
        sidecar = json.loads((dwi / f"sub-{subject}_dwi.json").read_text())
        (dropped,) = sidecar["DroppedVolumes"]
        # Independent check of the decision: the dropped volume is the geometric mean of
        # the three orthogonal directions (Philips' isotropic image), no acquired one.
        vols = [np.asarray(nib.load(dti_dir / f"{prefix}-DTI-{i:02d}.nii.gz").dataobj, float)
                for i in range(17)]
        head = (vols[0] > np.percentile(vols[0], 80)) & np.all(np.array(vols) > 0, axis=0)
        logs = [np.log(v[head]) for v in vols]
        geo = np.mean(logs[1:4], axis=0)
        assert np.corrcoef(geo, logs[dropped["volume"]])[0, 1] > 0.999
        assert dropped["volume"] == 16 and dropped["file"] == f"{prefix}-DTI-16.nii.gz"
        assert dropped["reason"] in (out / "ixi_import_log.txt").read_text()
        # Volumes, b-values and vectors one to one: volume i is DTI-i, unchanged.
        series = nib.load(dwi / f"sub-{subject}_dwi.nii.gz")
        assert series.shape[3] == 16 == len(sidecar["SourceVolumeOfEachVolume"])
        data = np.asarray(series.dataobj)
        for i in range(16):
            np.testing.assert_array_equal(data[..., i], vols[i])
        np.testing.assert_allclose(np.loadtxt(dwi / f"sub-{subject}_dwi.bval"), bvals)
        np.testing.assert_allclose(np.loadtxt(dwi / f"sub-{subject}_dwi.bvec"), bvecs)
    description = json.loads((out / "dataset_description.json").read_text())
    assert set(description["DWIVolumesDropped"]) == {f"sub-{CROPPED}"}


def _check_decided_from_images(dti_dir: Path, subject: str, tie_break: bool = True) -> None:
    bvals, bvecs = read_table(dti_dir / "bvals.txt", dti_dir / "bvecs.txt")
    vols = _dti_volumes(dti_dir, subject)
    assert [v[0] for v in vols] == list(range(17))
    in_place = assemble_dwi(vols, bvals, bvecs)
    assert in_place.dropped[0]["volume"] == 16
    assert in_place.dropped[0]["method"] == "dependence"
    # The derived volume moved to position 5: the detector must follow it there.
    order = list(range(16))
    order.insert(5, 16)
    moved = assemble_dwi([(i, vols[o][1], vols[o][2]) for i, o in enumerate(order)],
                         bvals, bvecs)
    assert moved.dropped[0]["volume"] == 5
    assert moved.source_volumes == [i for i in range(17) if i != 5]
    if not tie_break:
        return
    # A copy of the b=0 appended at the end: the b-table decides which copy to drop.
    copied = assemble_dwi([*vols[:16], (16, vols[0][1], "copy")], bvals, bvecs)
    assert copied.dropped[0]["volume"] == 16
    np.testing.assert_array_equal(np.asarray(copied.image.dataobj)[..., 0],
                                  np.asarray(vols[0][1].dataobj))


def test_quirk_decided_from_images_not_position() -> None:
    """On the shipped crop: found in place, followed when moved, ties broken by the b-table."""
    _check_decided_from_images(IXI_DTI_CROP, CROPPED)


@pytest.mark.slow
@pytest.mark.parametrize("subject", sorted(REAL))
def test_quirk_decided_on_full_size_subjects(full_dti_dir: Path, subject: str) -> None:
    """In place and moved, on both full-size subjects (when the shared data are present)."""
    _check_decided_from_images(full_dti_dir, subject, tie_break=False)


def test_t1_alignment_recovered_within_1mm(imported) -> None:
    out, _ = imported
    anat = out / "sub-IXI002" / "anat"
    t2 = nib.load(anat / "sub-IXI002_T2w.nii.gz")
    t1 = nib.load(anat / "sub-IXI002_T1w.nii.gz")
    assert same_grid(t1, t2)
    found = np.array(json.loads((anat / "sub-IXI002_T1w.json").read_text())
                     ["IXIImport"]["static_to_moving_world"])
    data = np.asarray(t2.dataobj)
    brain = nib.affines.apply_affine(t2.affine, np.argwhere(data > np.percentile(data, 70)))
    error = np.linalg.norm(nib.affines.apply_affine(found, brain)
                           - nib.affines.apply_affine(MOTION, brain), axis=1)
    assert error.mean() < 1.0, error.mean()


def test_output_is_a_cohort(imported, dti_dir: Path) -> None:
    out, report = imported
    cohort = Cohort.discover(out)
    assert cohort.ids == ["sub-IXI002", "sub-IXI025"]
    assert cohort.subject("sub-IXI002").contrasts == ["PDw", "T1w", "T2w"]
    assert cohort.subject("sub-IXI025").contrasts == ["PDw", "T2w", "b0"]
    b0 = cohort.subject("sub-IXI025").load("b0")
    raw = np.asarray(nib.load(dti_dir / "IXI025-Guys-0852-DTI-00.nii.gz").dataobj)
    np.testing.assert_allclose(b0.get_fdata(), raw)
    splits = cohort.splits()
    assert sorted(sum(splits.values(), [])) == cohort.ids
    assert "Guys\t0828" in (out / "participants.tsv").read_text()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["License"] == "CC BY-SA 3.0"
    assert "IXI project" in description["Acknowledgements"]
    assert [s.missing for s in report.subjects] == [["dwi"], ["T1w"]]
    assert (out / "qc" / "sub-IXI002_qc.png").stat().st_size > 1000


def test_resume_skips_complete_subjects(imported, fake_tree: Path, dti_dir: Path) -> None:
    out, _ = imported
    before = {p: p.stat().st_mtime_ns for p in out.glob("sub-*/**/*.nii.gz")}
    report = import_ixi(t1=fake_tree, t2=fake_tree, pd=fake_tree, dti=dti_dir, out=out,
                        settings=QUICK)
    assert [s.status for s in report.subjects] == ["skipped", "skipped"]
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("sub-*/**/*.nii.gz")}


def _cli(argv: list[str]) -> None:
    app = typer.Typer()
    app.command("ixi")(ixi)
    app.command("noop")(lambda: None)  # two commands, so "ixi" is a subcommand as in the lead's app
    run_app(app, ["ixi", *argv])


def test_tar_bad_names_damaged_member_and_conflicting_grids(
        fake_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t2 = nib.load(fake_tree / "IXI002-Guys-0828-T2.nii.gz")
    (tmp_path / "IXI007-IOP-0001-PD.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    shrunk = nib.Nifti1Image(np.asanyarray(t2.dataobj)[:-2], t2.affine, t2.header)
    nib.save(t2, tmp_path / "IXI008-HH-0002-T2.nii.gz")
    nib.save(shrunk, tmp_path / "IXI008-HH-0002-PD.nii.gz")
    (tmp_path / "IXI009_T2.nii.gz").write_bytes(b"whatever")
    archive = tmp_path / "IXI-T2PD.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("IXI002-Guys-0828-T2.nii.gz", "IXI002-Guys-0828-PD.nii.gz"):
            tar.add(fake_tree / name, arcname=name)
        for name in ("IXI007-IOP-0001-PD.nii.gz", "IXI008-HH-0002-T2.nii.gz",
                     "IXI008-HH-0002-PD.nii.gz", "IXI009_T2.nii.gz"):
            tar.add(tmp_path / name, arcname=f"extracted/{name}")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        _cli(["--t2", str(archive), "--pd", str(archive), "--out", str(out)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "IXI009_T2.nii.gz: not an IXI file name" in err
    assert "sub-IXI007: failed" in err and "IXI007-IOP-0001-PD.nii.gz: corrupted" in err
    assert "sub-IXI008: failed" in err and "conflicting grids" in err
    assert "sub-IXI002: imported PDw, T2w" in err
    cohort = Cohort.discover(out)
    assert cohort.ids == ["sub-IXI002"]
    t2_out = cohort.subject("sub-IXI002").load("T2w")
    np.testing.assert_array_equal(t2_out.get_fdata(), t2.get_fdata())
    assert not list(out.glob(".tmp-*")) and not (out / "sub-IXI008").exists()


def test_unreadable_archive_is_one_line_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "IXI-T1.tar"
    archive.write_bytes(b"this is not a tar archive" * 50)
    with pytest.raises(SystemExit) as exit_info:
        _cli(["--t1", str(archive), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {archive}: unreadable archive") and "\n" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="b-table"):
        import_ixi(dti=tmp_path, out=tmp_path / "out")


def test_import_is_valid_bids(imported) -> None:
    """The official validator accepts an import; QC pictures, log and splits are .bidsignore'd."""
    from bids_validation import bids_errors

    out, _ = imported
    assert (out / "qc").is_dir() and (out / "splits.json").is_file()
    assert bids_errors(out) == []
