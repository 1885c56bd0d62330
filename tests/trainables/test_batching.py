"""Tokenisation layout shared by training and scoring."""
import pytest
import torch

from trainables.batching import IGNORE, TokenSpec, collate_train, encode_examples
from trainables.data.examples import Example
from trainables.presets import build_model


def _example(prompt="Question: Which color? Options: (a) red (b) blue. Answer:", cands=("(a) red", "(b) blue")):
    return Example(pid="p1", image=torch.zeros(3, 32, 32, dtype=torch.uint8), prompt=prompt,
                   qformer_text=prompt, candidates=cands, answer_index=1)


@pytest.fixture(scope="module", params=["tiny-t5", "tiny-llama"])
def bundle(request):
    return build_model(request.param)


def test_prefix_has_exactly_the_image_tokens_then_the_prompt(bundle):
    (p,) = encode_examples([_example()], bundle, max_prompt_tokens=96)
    tok = bundle.llm_tokenizer
    image = [bundle.image_token_id] * bundle.num_query_tokens
    if bundle.family == "t5":
        assert list(p.prefix_ids[: len(image)]) == image and p.prefix_ids[-1] == tok.eos_token_id
        text = p.prefix_ids[len(image):-1]
    else:
        # LAVIS / InstructBlipProcessor: image tokens first, then BOS, then the prompt
        assert list(p.prefix_ids[: len(image)]) == image and p.prefix_ids[len(image)] == tok.bos_token_id
        text = p.prefix_ids[1 + len(image):]
    assert tok.decode(text) == _example().prompt
    assert all(c[-1] == tok.eos_token_id for c in p.candidate_ids)
    assert tok.decode(p.candidate_ids[1][:-1]).strip() == "(b) blue"
    assert p.qformer_ids[0] == bundle.qformer_tokenizer.cls_token_id
    assert p.qformer_ids[-1] == bundle.qformer_tokenizer.sep_token_id


def test_prompt_cap_cuts_from_the_left_keeping_question_and_options(bundle):
    long = "Context: " + "filler words " * 80 + "Question: Which color? Options: (a) red (b) blue. Answer:"
    (p,) = encode_examples([_example(prompt=long)], bundle, max_prompt_tokens=24)
    image_and_specials = bundle.num_query_tokens + 1
    assert len(p.prefix_ids) == 24 + image_and_specials
    assert bundle.llm_tokenizer.decode(p.prefix_ids).endswith("(b) blue. Answer:" + (
        bundle.llm_tokenizer.eos_token if bundle.family == "t5" else ""))
    assert len(p.qformer_ids) <= 24


def test_train_labels_cover_only_the_answer_and_align_with_inputs(bundle):
    short, long = _example(), _example(prompt="Question: Which shape is shown here today? Answer:",
                                      cands=("(a) a big red circle", "(b) square"))
    problems = encode_examples([short, long], bundle, 96)
    spec = TokenSpec.from_bundle(bundle)
    batch = collate_train(problems, torch.zeros(2, 3, 32, 32), spec)
    for row, p in enumerate(problems):
        target = list(p.candidate_ids[p.answer_index])
        labels = batch.labels[row]
        assert labels[labels != IGNORE].tolist() == target
        if bundle.family == "t5":
            assert batch.decoder_input_ids[row, : len(target)].tolist() == [spec.pad_id] + target[:-1]
        else:  # the input at position t+1 is the label of position t; the last label is </s>
            n = int(batch.attention_mask[row].sum())
            positions = (labels != IGNORE).nonzero().flatten()
            assert batch.input_ids[row, positions[:-1] + 1].tolist() == target[:-1]
            assert int(positions[-1]) == n - 1


def test_literal_image_token_in_a_prompt_fails_loudly(bundle):
    problems = encode_examples([_example(prompt="look at <image> Answer:")], bundle, 96)
    with pytest.raises(ValueError, match="image tokens"):
        collate_train(problems, torch.zeros(1, 3, 32, 32), TokenSpec.from_bundle(bundle))
