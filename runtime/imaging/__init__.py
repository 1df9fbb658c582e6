"""NIfTI I/O and validation, orientation, resampling, contrast names, and the
preprocessing (normalisation, slicing) that training and inference share."""
