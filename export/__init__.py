"""mri2mri.export: turn a training checkpoint into a self-describing ONNX model."""
