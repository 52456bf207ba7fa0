"""From trial to deployment: export the deploy form (ONNX, torch.export), and INT8 post-training quantization."""
