"""Training Qwen-Omni on thud-mt's preference pairs (SFT -> DPO with TRL) and the closed loop around the suites.

See "Alignment" in docs/architecture.md; ``python -m alignment --help``.
"""
