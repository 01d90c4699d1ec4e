"""GRPO: group-relative policy optimization with verifier rewards."""
