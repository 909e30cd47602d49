# openpose-train. `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
# A CPU build of torch by default; GPU users override, e.g. `make install TORCH=torch==2.13.0+cu128`
# or TORCH="torch --index-url https://download.pytorch.org/whl/cu128".
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
OUT_DIR ?= out

# `make lmdb` variables
COCO_DIR ?= data/coco
DATASET ?= coco
SPLIT ?= train2017
LMDB_JSON ?= $(COCO_DIR)/annotations/person_keypoints_$(SPLIT).json
LMDB_IMAGES ?= $(COCO_DIR)/$(SPLIT)
LMDB_OUT ?= $(OUT_DIR)/lmdb_$(DATASET)
LMDB_ARGS ?=

.PHONY: install test test-all demo lmdb bench proto coco clean help

help:
	@echo "make demo     - create .venv, install, run the whole pipeline on a synthetic dataset"
	@echo "make test     - run the test suite"
	@echo "make lmdb     - COCO-style JSON + images to an OpenPose LMDB (COCO_DIR, DATASET, LMDB_OUT)"
	@echo "make bench    - run every benchmark (JSON lines)"
	@echo "make proto    - regenerate caffe_layers/caffe_pb2.py from caffe_layers/caffe.proto"
	@echo "make coco     - download COCO 2017 keypoints (needs internet)"

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test,onnx]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --durations=15 tests $(PYTEST_ARGS)

# `make demo PRESET=mobilenet_v2` trains the light model (README "Fast models for OpenPose")
PRESET ?= tiny
demo: $(STAMP)
	$(PY) -m openpose_train.demo --out $(OUT_DIR)/demo --preset $(PRESET)

lmdb: $(STAMP)
	$(VENV)/bin/openpose-train lmdb --json $(LMDB_JSON) --images $(LMDB_IMAGES) --dataset $(DATASET) --out $(LMDB_OUT) $(LMDB_ARGS)

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "# $$b" >&2; $(PY) $$b || exit 1; done

proto:
	$(PY) -m grpc_tools.protoc -Icaffe_layers --python_out=caffe_layers caffe_layers/caffe.proto

coco:
	mkdir -p $(COCO_DIR)
	cd $(COCO_DIR) && for f in images/train2017.zip images/val2017.zip annotations/annotations_trainval2017.zip; do \
		curl -fLO http://images.cocodataset.org/zips/$$(basename $$f) || curl -fLO http://images.cocodataset.org/$$f; done
	cd $(COCO_DIR) && for z in *.zip; do unzip -q -n $$z; done

clean:
	rm -rf $(OUT_DIR) build *.egg-info
