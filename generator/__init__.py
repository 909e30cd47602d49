"""Pose-model registry, network families and prototxt rendering."""
