#!/usr/bin/env bash
# Where TTS output loses the words (issue: TTS judged for real, item 3): the open corpus' TTS
# split, five speech tokenizers (log-mel 25 / 100 Hz, Whisper last layer / layer 2 at 50 and 25 Hz), flow decoders trained on
# their tokens (with and without the mel prior, and with the normalised log-mel), and each stage's re-synthesis of held-out recordings (held-out sentences,
# held-out speakers) read by Whisper base (not tiny.en, whose encoder makes the whisper
# tokens). Results and reading: docs/results/tts_open.md. Stages whose output exists are skipped.
#
#   bash scripts/tts_stage_check.sh WORK [STEPS]      # STEPS: flow decoder steps (default 2000)
set -euo pipefail
W=$(realpath -m "${1:?usage: tts_stage_check.sh WORK [STEPS]}"); STEPS=${2:-2000}
D=$W/data
speech-rl data synth "$D/tts_open" --preset open --splits test_short=100,tts_train=2400

# tokenizer NAME=options; tokens live beside their manifest, so each tokenizer gets its own
# copy of the manifest (the wavs are shared)
TOKS=(
  "logmel256=--codebook-size 256 --stack 4"
  "whisper512=--codebook-size 512 --stack 1 --upstream whisper"
  "logmel1024x1=--codebook-size 1024 --stack 1"
  "whisper2_1024=--codebook-size 1024 --stack 1 --upstream whisper --upstream-layer 2"
  "whisper2_1024x2=--codebook-size 1024 --stack 2 --upstream whisper --upstream-layer 2"
)
# flow decoder RUN=tokenizer|train overrides|stages
FLOWS=(
  "logmel256=logmel256|data.codebook_size=256|recording,mel_vocoder,tokens_centroid,tokens_flow"
  "logmel256_prior=logmel256|data.codebook_size=256 model.flow.prior_weight=1.0|tokens_prior,tokens_flow"
  "whisper512=whisper512|data.codebook_size=512 model.flow.up=2|tokens_flow"
  "logmel1024x1_prior=logmel1024x1|data.codebook_size=1024 model.flow.up=1 model.flow.prior_weight=1.0|tokens_centroid,tokens_prior,tokens_flow"
  "whisper2_1024_prior=whisper2_1024|data.codebook_size=1024 model.flow.up=2 model.flow.prior_weight=1.0|tokens_centroid,tokens_prior,tokens_flow"
  "whisper2_1024x2_prior=whisper2_1024x2|data.codebook_size=1024 model.flow.prior_weight=1.0|tokens_centroid,tokens_prior,tokens_flow"
  "whisper2_1024x2_prior_norm=whisper2_1024x2|data.codebook_size=1024 model.flow.prior_weight=1.0 model.flow.mel_norm_utts=200|tokens_prior,tokens_flow"
)
for t in "${TOKS[@]}"; do
  name=${t%%=*}; T=$D/tts_$name
  mkdir -p "$T" && ln -sfn ../tts_open/wav "$T/wav" && cp -n "$D/tts_open/tts_train.jsonl" "$T/"
  [ -f "$T/speech_tokenizer.pt" ] || speech-rl data tokenize "$T/tts_train.jsonl" \
      --tokenizer "$T/speech_tokenizer.pt" --fit --fit-utts 1000 ${t#*=}
done
for f in "${FLOWS[@]}"; do
  run=${f%%=*}; IFS='|' read -r tok train_opts stages <<< "${f#*=}"
  T=$D/tts_$tok; R=$W/runs/flow_$run
  [ -f "$R/checkpoints/last.ckpt" ] || speech-rl train experiment=tts_open_flow paths.data_dir="$D" \
      data.train_manifest="$T/tts_train.jsonl" data.tokenizer="$T/speech_tokenizer.pt" \
      trainer.max_steps="$STEPS" hydra.run.dir="$R" $train_opts
  [ -f "$R/eval/stages.json" ] || speech-rl eval-tts-stages "$D/tts_open/test_short.jsonl" \
      "$R/checkpoints/last.ckpt" --tokenizer "$T/speech_tokenizer.pt" --speaker slt --judge base \
      --stages "$stages" --save "$R/eval/stages.json" --wav-dir "$R/eval/stages_wav"
done
for f in "${FLOWS[@]}"; do
  run=${f%%=*}; echo "== $run"
  python -c "import json,sys; from speech_rl.tts.stages import format_stages; \
print(format_stages(json.load(open(sys.argv[1]))))" "$W/runs/flow_$run/eval/stages.json"
done
