"""Caffe-semantics solver and training loop on PyTorch; export."""
