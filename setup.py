"""openpose-train: train OpenPose models (BODY_25, BODY_25B, BODY_135, custom skeletons).

Every top-level folder of the repository is mapped into the single import namespace
``openpose_train`` so that generic names (``generator``, ``validation``) never land in
site-packages.
"""
from setuptools import setup

SUBPACKAGES = {
    "openpose_train": "openpose_train",
    "openpose_train.common": "common",
    "openpose_train.generator": "generator",
    "openpose_train.templates": "templates",
    "openpose_train.dataset_tools": "dataset_tools",
    "openpose_train.caffe_layers": "caffe_layers",
    "openpose_train.training": "training",
    "openpose_train.validation": "validation",
}

setup(
    name="openpose-train",
    version="0.1.0",
    description="Train OpenPose models end to end: COCO-style data to LMDB, Caffe-compatible "
    "prototxts, a PyTorch engine with Caffe semantics, export and COCO AP.",
    python_requires=">=3.9",
    packages=list(SUBPACKAGES),
    package_dir=SUBPACKAGES,
    package_data={
        "openpose_train.templates": ["*.j2", "*.jinja2", "*.prototxt", "*.sh"],
        "openpose_train.caffe_layers": ["*.proto"],
        "openpose_train.generator": ["*.yaml"],
    },
    include_package_data=True,
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8,<5",
        "pycocotools>=2.0.7",
        "jinja2>=3.1",
        "lmdb>=1.4",
        "h5py>=3.8",
        "click>=8.1",
        "protobuf>=7.35.1,<8",
        "torch>=2.1",
        "tqdm>=4.66",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
        "jsonschema>=4.18",      # YAML skeletons (generator/skeleton.py); imported only to check one
        "tensorboard>=2.14",
        "numba>=0.61",        # label rendering kernel (caffe_layers/labels_kernel.py, docs/labels.md §Speed)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "grpcio-tools>=1.62"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "proto": ["grpcio-tools>=1.62"],
    },
    entry_points={"console_scripts": ["openpose-train=openpose_train.cli:main"]},
)
