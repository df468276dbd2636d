"""LightningDataModules over JSONL manifests (DESIGN.md data contract)."""
from datamodules.asr import ASRBatch, ASRDataModule, ManifestDataset, collate_asr

__all__ = ["ASRDataModule", "ManifestDataset", "ASRBatch", "collate_asr"]
