"""mri2mri.data: cohorts on disk, made or imported, with no torch.

A product of its own, used by training, the benchmarks and `mri2mri-data` alike:
the BIDS-like cohort reader and its subject splits (`cohort`), the simulator
(`simulate`: the MNI152 phantom, its tissues, head, EPI and field models, the
pseudo-DWI maker), the IXI importer (`ixi`), previews (`preview`) and the
`mri2mri-data` command (`cli`). It builds on `mri2mri.runtime` and nothing above it.
"""
