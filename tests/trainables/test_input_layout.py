"""The LLM input ids are those the checkpoints were tuned with: equal to transformers'
InstructBlipProcessor for the prompt (image tokens before BOS for LLaMA) and to LAVIS for the
candidates (``tok(c + eos)[1:]``), for byte-level and SentencePiece (Metaspace and legacy
Prepend/Replace) LLaMA tokenizers and for the T5 family."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import AddedToken
from transformers import BlipImageProcessorPil, InstructBlipProcessor

from trainables import standin_tokenizers
from trainables.batching import TokenSpec, collate_train, encode_examples
from trainables.data.examples import Example
from trainables.presets import build_model

PROMPT = ("Context: The fox is red. Question: Which animal is shown? "
          "Options: (a) a red fox (b) a gray wolf. Answer:")
CANDIDATES = ("(a) a red fox", "(b) a gray wolf")
QUERIES = 32


@pytest.fixture(scope="module")
def tiny():
    return {"t5": build_model("tiny-t5"), "llama": build_model("tiny-llama")}


def _tokenizer(kind: str, tiny):
    """(family, LLM tokenizer) of each kind under test."""
    return {
        "byte-level llama (shipped)": ("llama", tiny["llama"].llm_tokenizer),
        "sentencepiece llama (Metaspace)": ("llama", standin_tokenizers.llama_tokenizer()),
        "sentencepiece llama (legacy)": ("llama", standin_tokenizers.llama_tokenizer(legacy=True)),
        "byte-level t5 (shipped)": ("t5", tiny["t5"].llm_tokenizer),
        "sentencepiece t5": ("t5", standin_tokenizers.t5_tokenizer()),
    }[kind]


KINDS = ["byte-level llama (shipped)", "sentencepiece llama (Metaspace)",
         "sentencepiece llama (legacy)", "byte-level t5 (shipped)", "sentencepiece t5"]


def _encode(kind: str, tiny):
    family, tok = _tokenizer(kind, tiny)
    bundle = dataclasses.replace(tiny[family], llm_tokenizer=tok, num_query_tokens=QUERIES,
                                 image_token_id=tok.convert_tokens_to_ids(tok.image_token))
    example = Example(pid="p", image=torch.zeros(3, 32, 32, dtype=torch.uint8), prompt=PROMPT,
                      qformer_text=PROMPT, candidates=CANDIDATES, answer_index=1)
    (problem,) = encode_examples([example], bundle, max_prompt_tokens=256)
    return family, tok, bundle, problem


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_ids_equal_instructblip_processor(kind, tiny):
    family, tok, bundle, problem = _encode(kind, tiny)
    processor = InstructBlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                                      tokenizer=tok, qformer_tokenizer=bundle.qformer_tokenizer,
                                      num_query_tokens=QUERIES)
    # transformers 5.24's processor reads ``image_token.content`` although tokenizers now hold
    # the image token as a str; give it the AddedToken it expects (same text, same id).
    processor.image_token = AddedToken(tok.image_token, normalized=False, special=True)
    image = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
    expected = processor(images=image, text=PROMPT)
    assert list(problem.prefix_ids) == expected["input_ids"][0]
    assert list(problem.qformer_ids) == expected["qformer_input_ids"][0]
    image_id = bundle.image_token_id
    assert list(problem.prefix_ids[:QUERIES]) == [image_id] * QUERIES  # image tokens come first
    if family == "llama":
        assert problem.prefix_ids[QUERIES] == tok.bos_token_id  # then BOS, then the prompt


@pytest.mark.parametrize("kind", KINDS)
def test_candidate_ids_equal_lavis(kind, tiny):
    """LAVIS: llama ``tok(c + eos).input_ids[1:]`` (BOS dropped); T5 ``tok(c).input_ids``."""
    family, tok, _, problem = _encode(kind, tiny)
    for cand, ids in zip(CANDIDATES, problem.candidate_ids):
        if family == "llama":
            expected = tok(cand + tok.eos_token).input_ids[1:]
        else:
            expected = tok(cand).input_ids
        assert list(ids) == expected
        assert tok.decode(ids, skip_special_tokens=True).strip() == cand


def test_legacy_sentencepiece_would_get_an_extra_boundary_token_from_a_leading_space():
    """Why candidates carry no leading space: the hub's legacy LLaMA tokenizer would add a lone
    ``▁`` that the checkpoint never saw in training (the bug this layout fixes)."""
    tok = standin_tokenizers.llama_tokenizer(legacy=True)
    plain = tok("(a) red", add_special_tokens=False).input_ids
    spaced = tok(" (a) red", add_special_tokens=False).input_ids
    assert spaced == [tok.convert_tokens_to_ids("▁")] + plain


@pytest.mark.parametrize("kind", ["sentencepiece llama (Metaspace)", "sentencepiece t5"])
def test_training_batch_is_prompt_then_target_with_labels_on_the_target(kind, tiny):
    family, _, bundle, problem = _encode(kind, tiny)
    batch = collate_train([problem], torch.zeros(1, 3, 32, 32), TokenSpec.from_bundle(bundle))
    target = list(problem.candidate_ids[1])
    if family == "llama":  # LAVIS: query embeds + BOS-led prompt + target, target[-1] not input
        assert batch.input_ids[0].tolist() == list(problem.prefix_ids) + target[:-1]
        assert batch.labels[0, len(problem.prefix_ids) - 1:].tolist() == target
    else:
        assert batch.input_ids[0].tolist() == list(problem.prefix_ids)
        assert batch.labels[0].tolist() == target


def test_standin_tokenizers_have_the_real_special_token_layout():
    llama, t5 = standin_tokenizers.llama_tokenizer(), standin_tokenizers.t5_tokenizer()
    assert (llama.bos_token_id, llama.eos_token_id, llama.pad_token_id) == (2, 2, 32000)
    assert llama.convert_tokens_to_ids("<image>") == 32001 and len(llama) == 32002
    assert (t5.pad_token_id, t5.eos_token_id) == (0, 1)
    assert t5.convert_tokens_to_ids("<image>") == 32100 and len(t5) == 32101
