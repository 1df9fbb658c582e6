"""Where the importer writes things, and the dataset-level files (BIDS-like layout).

``sub-<id>/anat/sub-<id>_{T1w,T2w,PDw,angio}.nii.gz`` (one grid per subject),
``sub-<id>/dwi/sub-<id>_dwi.nii.gz`` + ``.bval``/``.bvec``/``.json`` (native DWI grid)
and ``sub-<id>/dwi/sub-<id>_b0.nii.gz`` (mean b=0; a name `Cohort.discover` ignores,
so the ``b0`` contrast is always derived from the 4D series and its b-values).
"""

from __future__ import annotations

from pathlib import Path

from mri2mri.data.cohort import SPLIT_FILE, make_splits
from mri2mri.runtime.bids.names import dataset_description, generated_by
from mri2mri.runtime.bids.names import write_dataset_files as write_bids_files
from mri2mri.runtime.core.atomic import atomic_path, write_json

MARKER = ".ixi-import.json"
QC_DIR = "qc"
LOG_FILE = "ixi_import_log.txt"
LICENSE = "CC BY-SA 3.0"
ACKNOWLEDGEMENT = ("Data provided by the IXI project, Imperial College London, "
                   "https://brain-development.org/ixi-dataset/")
#: Useful to people, not part of BIDS: the validator is told to skip them. The mean b=0
#: (``_b0``) has no BIDS suffix; discovery derives b0 from the 4D series anyway.
BIDS_IGNORE = (QC_DIR, LOG_FILE, SPLIT_FILE, "sub-*/dwi/*_b0.nii.gz")
README = f"""# IXI, imported by mri2mri

The IXI dataset (about 580 healthy adults, three London hospitals) in BIDS, written by
`mri2mri-data ixi`. {ACKNOWLEDGEMENT}. Licence: {LICENSE}.

Not BIDS, listed in .bidsignore: `{QC_DIR}/` (one QC picture per subject), `{LOG_FILE}`,
`{SPLIT_FILE}` (train/validation/test subjects) and `sub-*/dwi/*_b0.nii.gz` (mean b=0).
"""
#: The study's split of IXI: 338 training and 79 test subjects, the rest validation.
STUDY_TRAIN, STUDY_TEST = 338, 79
#: Validation share when the cohort is smaller than the study's.
SMALL_VALIDATION = 0.15


def anat_name(subject: str, contrast: str) -> str:
    return f"sub-{subject}_{contrast}.nii.gz"


def write_text(path: Path, text: str) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text)


def ixi_split_sizes(n: int) -> tuple[int, int, int]:
    """(train, validation, test): the study's 338/rest/79 when n >= 417, proportional below.

    Below 417 subjects, 15 % (at least one) are held out for validation and the rest
    is divided train:test in the study's 338:79 ratio (at least one test subject).
    """
    if n >= STUDY_TRAIN + STUDY_TEST:
        return STUDY_TRAIN, n - STUDY_TRAIN - STUDY_TEST, STUDY_TEST
    if n < 3:
        return n, 0, 0
    n_val = max(1, round(n * SMALL_VALIDATION))
    n_test = max(1, round((n - n_val) * STUDY_TEST / (STUDY_TRAIN + STUDY_TEST)))
    return n - n_val - n_test, n_val, n_test


def write_dataset_files(out: Path, records: list[dict], seed: int = 0) -> dict[str, list[str]]:
    """participants.tsv, splits.json and dataset_description.json for the complete subjects."""
    records = sorted(records, key=lambda r: r["subject"])
    rows = ["participant_id\tsite\tsession\tcontrasts\tmissing"]
    for r in records:
        rows.append("\t".join([f"sub-{r['subject']}", r["site"], r["session"],
                               ",".join(r["contrasts"]) or "n/a",
                               ",".join(r["missing"]) or "n/a"]))
    write_text(out / "participants.tsv", "\n".join(rows) + "\n")
    ids = [f"sub-{r['subject']}" for r in records]
    splits = make_splits(ids, seed=seed, sizes=ixi_split_sizes(len(ids))) if ids else \
        {"train": [], "validation": [], "test": []}
    write_json(out / SPLIT_FILE, splits)
    dropped = {f"sub-{r['subject']}": r["dwi"]["dropped"] for r in records
               if r.get("dwi") and r["dwi"].get("dropped")}
    description = dataset_description(
        "IXI (imported by mri2mri)", "raw",
        [generated_by("mri2mri-data ixi", (
            "Anatomical contrasts on the T2/PD (dual-echo) grid: T1 and MRA registered "
            "rigidly (DIPY mutual information) and resliced; DWI on its native grid. "
            "IXI's bvals/bvecs list 16 entries for 17 DTI volumes: the volume that is "
            "not an acquired direction was identified per subject from the images "
            "(see each sub-*_dwi.json) and left out of the 4D series."))],
        authors=["IXI project, Imperial College London"],
        source_datasets=[{"URL": "https://brain-development.org/ixi-dataset/"}],
        License=LICENSE, Acknowledgements=ACKNOWLEDGEMENT, HowToAcknowledge=ACKNOWLEDGEMENT,
        ReferencesAndLinks=["https://brain-development.org/ixi-dataset/"],
        SubjectSplit=(f"splits.json, seed {seed}: the study's 338 train / 79 test, rest "
                      "validation when there are at least 417 subjects; otherwise 15 % "
                      "validation and the rest train:test in the ratio 338:79"),
        DWIVolumesDropped=dropped)
    write_bids_files(out, description, readme=README, ignore=BIDS_IGNORE)
    return splits
