"""Synthesis with an ONNX model: the engine (`synthesizer`), batches and the BIDS App
(`batch`), the "unlike the training data" check (`ood`), and `mri2mri-run` (`cli_run`)."""
