"""Validation designs: induced-shortcut experiments, simulations with a known truth, the demo."""
