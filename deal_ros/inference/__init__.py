"""Inference: a camera frame in, mask / confidence / pseudo-label out; ONNX export of the same network."""
