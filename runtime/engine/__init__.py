"""Where an ONNX model runs: device names, execution providers that really start (with
their failure reasons), the TensorRT engine cache, and the onnxruntime session."""
