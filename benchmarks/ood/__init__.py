"""How the out-of-distribution threshold of `mri2mri-run` is chosen
(`mri2mri-bench ood-threshold`)."""
