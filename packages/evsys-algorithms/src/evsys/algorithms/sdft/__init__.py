"""SDFT: self-distillation fine-tuning against an answer-aware frozen teacher."""
