"""The evaluation stage: metrics overall and per modality, the worst images, ONNX and INT8 exports."""
