"""Caffe-compatible runtime: caffe.proto, prototxt/caffemodel I/O, torch layers, OPData."""
