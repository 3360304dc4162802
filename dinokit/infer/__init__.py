"""Inference: predictor, COCO evaluator, ONNX export, compile / quantise options, metric tables."""
