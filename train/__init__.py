"""mri2mri.train: PyTorch training of contrast-translation U-Nets, and dataset preparation.

Importing this package does not import torch; the modules that need it do.
Data preparation (`mri2mri-data`: demo cohort, IXI importer) needs no torch.
"""
