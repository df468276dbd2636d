#!/usr/bin/env bash
# The TTS LM on the Whisper layer-2 tokens (issue: TTS judged for real, item 3): what sampling the
# speech tokens adds to the loss of the words, on top of the flow decoder that reads ground-truth
# tokens. Open corpus' TTS split plus a 50-row val split (val-pool sentences, training voices:
# the LM's early-stopping signal, val/lm); the 25 Hz Whisper layer-2 tokenizer; the flow decoder
# on normalised log-mel (3000 steps); then the LM alone (flow and token ASR frozen at weight 0,
# the flow taken from the decoder run by model.init_parts=[flow]), checkpoints and val/lm every
# 250 steps. Held-out texts (test_short: held-out sentences; its held-out speakers are not in the
# speaker table, so rows go as training voice slt) are synthesised by the checkpoint of the
# lowest val/lm and judged by Whisper base. Results: docs/results/tts_open.md. Stages whose output
# exists are skipped.
#
#   bash scripts/tts_lm_check.sh WORK [LM_STEPS] [FLOW_STEPS] [N_TRAIN]    # defaults 2000, 3000, 2400
# (N_TRAIN: tts_train utterances; the sft pool holds 5707 sentences, more than that cycles them in
# other voices; test_short and val do not change with it: each split is seeded by its own name)
set -euo pipefail
W=$(realpath -m "${1:?usage: tts_lm_check.sh WORK [LM_STEPS] [FLOW_STEPS] [N_TRAIN]}"); LM_STEPS=${2:-2000}; FLOW_STEPS=${3:-3000}
N_TRAIN=${4:-2400}
D=$W/data; T=$D/tts_whisper2_1024x2; F=$W/runs/flow_whisper2_1024x2_prior_norm; L=$W/runs/lm_whisper2_256x4
[ -f "$D/tts_open/val.jsonl" ] || speech-rl data synth "$D/tts_open" --preset open --splits test_short=100,tts_train="$N_TRAIN",val=50
mkdir -p "$T" && ln -sfn ../tts_open/wav "$T/wav" && cp -n "$D/tts_open/tts_train.jsonl" "$D/tts_open/val.jsonl" "$T/"
[ -f "$T/val.tokens.jsonl" ] || speech-rl data tokenize "$T/tts_train.jsonl" "$T/val.jsonl" \
    --tokenizer "$T/speech_tokenizer.pt" --fit --fit-utts 1000 --codebook-size 1024 --stack 2 --upstream whisper --upstream-layer 2
COMMON=(experiment=tts_open_flow paths.data_dir="$D" data.train_manifest="$T/tts_train.jsonl"
        data.tokenizer="$T/speech_tokenizer.pt" data.codebook_size=1024 model.flow.prior_weight=1.0
        model.flow.mel_norm_utts=200)
[ -f "$F/checkpoints/last.ckpt" ] || speech-rl train "${COMMON[@]}" trainer.max_steps="$FLOW_STEPS" hydra.run.dir="$F"
[ -f "$L/checkpoints/last.ckpt" ] || speech-rl train "${COMMON[@]}" 'module.loss_weights={lm:1.0,flow:0.0,token_asr:0.0}' \
    model.init_from="$F/checkpoints/last.ckpt" 'model.init_parts=[flow]' data.val_manifest="$T/val.jsonl" \
    model.lm.hidden_size=256 model.lm.num_layers=4 model.lm.num_heads=8 model.lm.num_kv_heads=4 \
    model.flow_temperature=0.667 trainer.max_steps="$LM_STEPS" trainer.val_check_interval=250 hydra.run.dir="$L"
# the checkpoint of the lowest val/lm (TensorBoard scalars of the LM run)
BEST=$(python - "$L" <<'EOF'
import sys
from pathlib import Path
from speech_rl.plot import read_scalars
steps, values = read_scalars(Path(sys.argv[1]))["val/lm"]
for step, v in zip(steps, values):
    print(f"val/lm step {step}: {v:.4f}", file=sys.stderr)
print(steps[values.index(min(values))])
EOF
)
# validation runs at the end of step N-1's batch (logged as N-1), the checkpoint of that step is stepN
CK=$L/checkpoints/step$(printf %06d "$BEST").ckpt
[ -f "$CK" ] || CK=$L/checkpoints/step$(printf %06d $((BEST + 1))).ckpt
echo "lowest val/lm at step $BEST: $CK"
python -c "import json,sys; [print(json.dumps({k: v for k, v in json.loads(l).items() if k != 'speaker'})) for l in open(sys.argv[1])]" \
    "$D/tts_open/test_short.jsonl" > "$W/heldout_texts.jsonl"
mkdir -p "$L/eval"
[ -f "$L/eval/heldout_best.json" ] || speech-rl eval-tts "$W/heldout_texts.jsonl" "$CK" --speaker slt --judge base \
    --seed 0 1 --save "$L/eval/heldout_best.json" --wav-dir "$L/eval/wav_heldout_best"
[ -f "$L/eval/heldout_last.json" ] || speech-rl eval-tts "$W/heldout_texts.jsonl" "$L/checkpoints/last.ckpt" \
    --speaker slt --judge base --seed 0 --save "$L/eval/heldout_last.json"
echo LMCHECKDONE
