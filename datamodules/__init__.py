"""LightningDataModules over JSONL manifests (DESIGN.md data contract)."""
from datamodules.asr import ASRBatch, ASRDataModule, ManifestDataset, collate_asr
from datamodules.tts import TTSBatch, TTSDataModule, TTSDataset, collate_tts

__all__ = ["ASRDataModule", "ManifestDataset", "ASRBatch", "collate_asr", "TTSDataModule", "TTSDataset", "TTSBatch",
           "collate_tts"]
