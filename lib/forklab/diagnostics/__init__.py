"""Diagnostics: entropy statistics, entropy dynamics, token hidden reward (THR) and TIP token importance."""
