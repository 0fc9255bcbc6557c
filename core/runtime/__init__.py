"""Predicting with exported models on numpy, Pillow and onnxruntime alone (``pip install defectlab[runtime]``).

Nothing here imports torch at import time: an inspection PC runs ``defectlab predict model.onnx``
without it. The run's own PyTorch model predicts through the same code (:mod:`.predicting`), so
both write the same files.
"""
