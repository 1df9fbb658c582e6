"""mri2mri.data.simulate: simulated cohorts with a known truth.

The demo cohort (`demo_cohort`, from the MNI152 template with the tissue physics of
`tissue` and the smooth fields of `fields`; optionally a head from `head` and an EPI
read-out of its DWI from `epi`), acquisition shifts (`shift`), and pseudo-DWI cohorts
from real T1w/T2w pairs (`pseudo_dwi`). numpy, scipy and nibabel; nilearn for the
template.
"""
