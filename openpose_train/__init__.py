"""openpose-train: train OpenPose models with a Caffe-compatible engine on PyTorch."""
__version__ = "0.1.0"
