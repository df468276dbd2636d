#!/usr/bin/env bash
# Debian packages of the open-vocabulary corpus: flite / festival voices (recorded CMU
# speakers), eSpeak NG's command line (English IPA for Kokoro), the fortune sentence files
# and miscfiles' name / place lists. Needs root (or sudo); without them the corpus skips those
# voices with a message and the tests that need them are skipped.
set -euo pipefail
PKGS="flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng fortunes fortunes-min miscfiles"
missing=$(for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
[ -z "$missing" ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "not root and no sudo: install these Debian packages yourself: $missing" >&2; exit 0; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
