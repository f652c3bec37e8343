"""Hostile-input harnesses: the parser targets shared by the hypothesis suite (tests/test_hostile_*.py)
and the optional atheris harness (fuzz/atheris_fuzz.py)."""
