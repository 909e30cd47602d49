#!/usr/bin/env python
"""Render OpenPose training/solver/deploy prototxts and scripts (same as `openpose-train prototxt`)."""
from openpose_train.generator.cli import prototxt

if __name__ == "__main__":
    prototxt(prog_name="generate_prototxt.py")
