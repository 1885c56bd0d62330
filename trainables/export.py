"""Export a trial's result as a ready model: the best-val adapters merged into the base.

    python -m trainables.export --checkpoint CKPT_DIR --out MODEL_DIR

The base is rebuilt from the trial's own config (preset or model_path; tiny presets from the
trial seed, exactly as the trial built it), the checkpoint's ``best`` tensors are loaded, LoRA
is merged (peft ``merge_and_unload``) and the plain InstructBLIP model is written with
``save_pretrained`` together with its tokenizers (``qformer_tokenizer/`` as in Salesforce's
repos), so ``InstructBlipForConditionalGeneration.from_pretrained(MODEL_DIR)`` loads it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from trainables.checkpoint import load_tensors, read_meta
from trainables.config import TrialConfig
from trainables.families import family_spec
from trainables.peft_targeting import apply_method
from trainables.presets import ModelBundle, build_model


def load_trial_model(checkpoint: Path, which: str = "best") -> tuple[TrialConfig, ModelBundle, nn.Module]:
    """Rebuild a trial's model and load its ``best`` (or ``last``) trainable tensors."""
    cfg = TrialConfig.from_dict(read_meta(checkpoint)["config"])
    bundle = build_model(cfg.llm, model_path=cfg.model_path, seed=cfg.seed)
    model = apply_method(bundle.model, cfg.peft, family_spec(bundle.family))
    load_tensors(model, Path(checkpoint) / which)
    return cfg, bundle, model


def export_model(checkpoint: Path, out: Path) -> Path:
    """Write the merged model of ``checkpoint`` to ``out``; returns ``out``."""
    _, bundle, model = load_trial_model(Path(checkpoint))
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    out = Path(out)
    merged.save_pretrained(str(out))
    if bundle.llm_tokenizer is not None:
        bundle.llm_tokenizer.save_pretrained(str(out))
        bundle.qformer_tokenizer.save_pretrained(str(out / "qformer_tokenizer"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainables.export", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trial checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="where the merged model is written")
    args = parser.parse_args(argv)
    print(export_model(args.checkpoint, args.out))


if __name__ == "__main__":
    main()
