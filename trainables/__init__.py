"""What runs inside one trial: config, models, PEFT targeting, data, training step, scoring.

Import submodules explicitly (``from trainables.presets import build_model``); this package
has no import side effects.
"""
