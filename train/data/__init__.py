"""mri2mri.train.data: cohorts to train on, with no torch needed.

The simulated demo cohort (`demo_cohort`, from the MNI152 template with the
tissue physics of `tissue` and the smooth fields of `fields`; optionally a head
from `head` and an EPI read-out of its DWI from `epi`), pseudo-DWI cohorts from
real T1w/T2w pairs (`pseudo_dwi`), the IXI importer (`ixi`), their previews, and
`mri2mri-data` (`cli`). Everything here writes
BIDS folders that `mri2mri.train.cohort.Cohort` reads; none of it is the
training loop.
"""
