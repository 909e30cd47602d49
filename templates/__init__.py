"""Jinja2 templates (package data) used by :mod:`openpose_train.generator`."""
