#!/usr/bin/env bash
# The device check, for the day a GPU is lent (one command, sized for < 8 min on one H200):
# installs the GPU extras, runs the engine contract suite on CUDA for the torch, vLLM and
# SGLang engines, one ASR GRPO step and one TTS GRPO step with the device hand-off under
# trainer=fsdp2_gpu and trainer=fsdp_gpu, and prints the per-phase tables.
# NOT RUN YET: no GPU has been lent to this project's sessions so far.
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) $*"; }
status=0
run() { log "$*"; "$@" 2>&1 | tee -a "$OUT/gpu_check.log"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || { echo "FAILED ($rc): $*"; status=1; }; }

log "install (CUDA torch as the machine has it, then the gpu extras: sglang, vllm)"
python3 -m venv .venv-gpu && . .venv-gpu/bin/activate
python -m pip install -q --upgrade pip
run pip install -q -e ".[test,gpu]" vllm
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu_check.log"

log "engine contract suite on CUDA (torch, vllm, sglang) and the GPU-marked tests"
run python -m pytest -q -p no:cacheprovider tests/engines -m "gpu or not gpu" -x
run python -m pytest -q -p no:cacheprovider -m gpu

for trainer in fsdp2_gpu fsdp_gpu; do
  log "ASR GRPO, hand-off on, trainer=$trainer, engines torch / vllm / sglang"
  for engine in torch vllm sglang; do
    run python benchmarks/step_phases.py --out "$OUT/asr_${trainer}_${engine}" --steps 3 -- \
      trainer=$trainer rollout=$engine trainer.devices=1
  done
  log "TTS GRPO with flow + vocoder in the loop, trainer=$trainer"
  run python benchmarks/step_phases.py --out "$OUT/tts_${trainer}" --experiment tts_rl --steps 3 -- \
    trainer=$trainer algorithm=grpo rollout.needs_audio=true trainer.devices=1
done
for f in "$OUT"/*/phases.md; do echo "### $f"; cat "$f"; done
exit $status
