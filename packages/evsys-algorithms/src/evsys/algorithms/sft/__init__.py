"""SFT: cross-entropy on gold answers (prompt masked)."""
