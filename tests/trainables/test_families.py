"""LLM families as data: the layout each spec declares, and one error for a family without one."""
from __future__ import annotations

import pytest

from trainables.defaults import recipe_for
from trainables.families import FAMILIES, family_for_model_type, family_spec
from trainables.presets import build_model, model_config


def test_layouts():
    images, prompt, bos, eos = [9, 9], [5, 6], 1, 2
    assert family_spec("t5").prefix(images, prompt, bos, eos) == [9, 9, 5, 6, 2]
    assert family_spec("llama").prefix(images, prompt, bos, eos) == [9, 9, 1, 5, 6]
    assert family_spec("t5").encoder_decoder and not family_spec("llama").encoder_decoder


def test_recipes_come_from_the_family():
    assert recipe_for("flan-t5-xl") is FAMILIES["t5"].recipe
    assert recipe_for("vicuna-7b") is FAMILIES["llama"].recipe
    assert (recipe_for("vicuna-7b").batch_size, recipe_for("vicuna-7b").grad_accum) == (8, 2)


def test_unknown_family_fails_naming_it():
    with pytest.raises(ValueError, match=r"unknown LLM family 'mistral'"):
        family_spec("mistral")


def test_a_checkpoint_of_an_unknown_family_fails_naming_it(tmp_path):
    """A saved InstructBLIP whose LLM is a Mistral (no spec here): one error naming the type,
    not the LLaMA path taken silently."""
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration, MistralConfig
    toy = model_config("tiny-llama")
    text = MistralConfig(vocab_size=toy.text_config.vocab_size, hidden_size=64,
                         intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=4)
    config = InstructBlipConfig(vision_config=toy.vision_config.to_dict(),
                                qformer_config=toy.qformer_config.to_dict(),
                                text_config=text.to_dict(), num_query_tokens=toy.num_query_tokens,
                                image_token_index=toy.image_token_id)
    InstructBlipForConditionalGeneration(config).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=r"LLM type 'mistral' has no family spec"):
        build_model("vicuna-7b", model_path=str(tmp_path))
    assert family_for_model_type("llama", "x").name == "llama"


def test_every_preset_family_has_a_spec():
    for preset in ("tiny-t5", "tiny-llama"):
        assert family_spec(build_model(preset, meta=True).family).model_type == \
            model_config(preset).text_config.model_type
