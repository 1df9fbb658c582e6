"""mri2mri.train: PyTorch training of contrast-translation U-Nets.

The loop (`trainer`, `cli_train`, `distributed` for torchrun), the network
(`model`), the loss (`perceptual`), the training data (`prepare` a subject,
`cache` it on disk, `dataset` reads it memory-mapped), `validation`,
checkpoints, the look-up-table baseline and the metrics. Importing this package does not
import torch; the modules that need it do. Cohort preparation lives in
`mri2mri.data` (no torch), which this package builds on.
"""
