"""Curate's training side: base models, LoRA runs and their evaluation (issue 5).

Heavy libraries (torch, transformers, peft) are imported inside functions only.
"""
