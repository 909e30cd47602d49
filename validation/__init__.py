"""OpenPose-exact inference, post-processing and COCO keypoint evaluation."""
