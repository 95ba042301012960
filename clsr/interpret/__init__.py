"""Interpretation and control: concept descriptions (`describe`, `describers`), word-level evidence
(`evidence`), explanations whose contributions sum to the score (`explain`), and the local web explorer
(`explorer`, `serve`). Commands: `clsr describe|explain|serve` (`command`)."""
