"""COCO-style annotations to OpenPose training LMDBs; synthetic data; LMDB inspection."""
