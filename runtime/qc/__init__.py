"""Self-contained HTML quality-control reports (images embedded as PNG data URIs).

One page per participant plus a group index for `mri2mri-run`, one page per
registration for `mri2mri-register --report`; every page opens offline.
"""
