#!/usr/bin/env bash
# Table 1 on the open-vocabulary world, from Whisper tiny.en as it ships (the main job's base and
# recipe: experiment=asr_rl_open_main, 30 GRPO steps, lr 3e-5), on the full test sets and an RL
# pool of the corpus's RL sentences. Results and reading: docs/results/asr_open.md "Table 1 from
# tiny.en". Every stage is kept in WORK and skipped when its output exists, so a stopped grid
# continues where it stopped.
#
#   bash scripts/asr_open_grid.sh WORK [CELL...]      # no CELL: every cell below, in this order
#
# A cell is NAME=overrides (Hydra overrides of speech-rl train, separated by spaces).
set -euo pipefail
W=$(realpath -m "${1:?usage: asr_open_grid.sh WORK [CELL...]}"); shift
D=$W/data
MNT=160                                    # greedy decoding limit, both test sets and the pool (as the main job)
CELLS=(
  "r12_d0d2_s0=reward=asr_r12 rl_data=D0_D2 seed=0"
  "r1_d0d2_s0=reward=asr_r1 rl_data=D0_D2 seed=0"
  "r123_d0d2_s0=reward=asr_r123 rl_data=D0_D2 seed=0"
  "mwer_d0d2_s0=algorithm=mwer reward=asr_r1 rl_data=D0_D2 seed=0"
  "r12_d1d2_s0=reward=asr_r12 rl_data=D1_D2 seed=0"
  "r12_d0_s0=reward=asr_r12 rl_data=D0 seed=0"
  "r12_all_s0=reward=asr_r12 rl_data=all seed=0"
  "r12_d0d2_s1=reward=asr_r12 rl_data=D0_D2 seed=1"
  "r12_d0d2_s2=reward=asr_r12 rl_data=D0_D2 seed=2"
)
[ $# -gt 0 ] && CELLS=("$@")

# 1. the corpus: full test sets (300 short, 50 long of held-out speakers) and the first 400 short /
#    80 long utterances of the RL pool (RL sentences, training speakers)
speech-rl data synth "$D" --preset open --splits test_short=300,test_long=50,rl_pool=400,rl_pool_long=80
cat "$D/rl_pool.jsonl" "$D/rl_pool_long.jsonl" > "$D/pool.jsonl"

# 2. the base (tiny.en, no weight changed), its test figures and its pool hypotheses (system 1)
B=$W/runs/base
mkdir -p "$B/eval"
[ -f "$B/tiny_en.ckpt" ] || python -c "from speech_rl.pipeline_open import write_pretrained_base as w; w('$B/tiny_en.ckpt')"
evaluate() {   # RUN CKPT: test_short, test_long -> RUN/eval/*.json
  for s in test_short test_long; do
    [ -f "$1/eval/$s.json" ] || speech-rl eval "$D/$s.jsonl" "$2" --max-new-tokens $MNT --batch-size 16 \
      --normalizer whisper --save "$1/eval/$s.json" --hyp-out "$1/eval/$s.hyp.jsonl"
  done
}
evaluate "$B" "$B/tiny_en.ckpt"
[ -f "$W/hyps/tiny_en.jsonl" ] || { mkdir -p "$W/hyps"; speech-rl eval "$D/pool.jsonl" "$B/tiny_en.ckpt" \
  --max-new-tokens $MNT --batch-size 16 --normalizer whisper --hyp-out "$W/hyps/tiny_en.jsonl"; }
# 3. a second, independent system for D1: multilingual Whisper base (faster-whisper)
[ -f "$W/hyps/whisper_base.jsonl" ] || speech-rl eval "$D/pool.jsonl" --system whisper --whisper-model base \
  --normalizer whisper --hyp-out "$W/hyps/whisper_base.jsonl"
[ -f "$D/rl/selection.json" ] || speech-rl data select --pool "$D/pool.jsonl" --hyps "$W/hyps/tiny_en.jsonl" \
  --hyps "$W/hyps/whisper_base.jsonl" --normalizer whisper --out "$D/rl" --sizes D0=200,D1=120,D2=80,D3=120

# 4. the cells: train from the base, evaluate the last checkpoint (none is picked on a test set)
for cell in "${CELLS[@]}"; do
  name=${cell%%=*}; read -r -a over <<< "${cell#*=}"
  R=$W/runs/$name
  if [ ! -f "$R/checkpoints/last.ckpt" ]; then
    SPEECH_RL_DATA=$D speech-rl train experiment=asr_rl_open_main model.init_from="$B/tiny_en.ckpt" \
      paths.rl_dir="$D/rl" resume=auto "${over[@]}" hydra.run.dir="$R" > "$W/runs/$name.log" 2>&1
  fi
  evaluate "$R" "$R/checkpoints/last.ckpt"
done
speech-rl report "$W"/runs/*_s? --base "$B" | tee "$W/report.md"
