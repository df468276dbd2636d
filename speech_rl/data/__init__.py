"""Data tools: manifests (the JSONL contract), audio loading, features, tokenizers,
and the eSpeak NG corpus synthesiser behind the embedded default."""
