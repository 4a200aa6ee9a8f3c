"""Reward model: batch-invariant scoring, training on a synthetic keyword task, saved dir, config entry point,
and scoring rollouts with an RM whose tokenizer differs from the policy's (re-encoded text) or matches it (ids).

    .venv/bin/python -m pytest tests/unit/test_reward_model.py -q
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from text_corpus import WORDS
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from una_hpc.config import Config
from una_hpc.data import DataError, encode_prompts
from una_hpc.data.helpsteer import combine_attributes
from una_hpc.models.policy import load_tokenizer
from una_hpc.rollout import RewardModel, Rollout, ScoredText, train_reward_model, train_rm_from_config
from una_hpc.rollout.reward import encode_pair, encode_texts, same_tokenizer
from una_hpc.rollout.reward_train import META_FILE, load_scored_rows

KEYWORD = "cat"


def keyword_rows(n: int, seed: int) -> list[ScoredText]:
    """Responses containing the keyword score 1, the others 0 (half each); prompts are random words."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w != KEYWORD]
    rows = []
    for i in range(n):
        response = [rng.choice(words) for _ in range(rng.randint(3, 10))]
        good = i % 2 == 0
        if good:
            response.insert(rng.randrange(len(response) + 1), KEYWORD)
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        rows.append(ScoredText(prompt, " ".join(response), float(good)))
    return rows


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "reward_model"
    return train_reward_model(tiny_model_dir, keyword_rows(256, seed=0), out, steps=80, lr=3e-4, seed=0, batch_size=16)


def test_training_learns_the_keyword(trained):
    rm = RewardModel.from_pretrained(trained)
    held_out = keyword_rows(64, seed=1)
    scores = torch.sigmoid(rm.score_texts([r.prompt for r in held_out], [r.response for r in held_out]))
    target = torch.tensor([r.score for r in held_out])
    corr = float(torch.corrcoef(torch.stack([scores, target]))[0, 1])
    meta = json.loads((trained / META_FILE).read_text())
    assert corr > 0.8, (corr, meta)
    assert meta["final_loss"] < meta["first_loss"] and meta["steps"] == 80


def test_saved_dir_loads_with_auto_class(trained, tiny_model_dir):
    model = AutoModelForSequenceClassification.from_pretrained(str(trained))
    tok = AutoTokenizer.from_pretrained(str(trained))
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    assert tok.chat_template == AutoTokenizer.from_pretrained(str(tiny_model_dir)).chat_template
    rm = RewardModel.from_pretrained(trained)
    ids = rm.encode("count one two", "one two three")
    direct = model(input_ids=torch.tensor([ids])).logits[0, 0]
    torch.testing.assert_close(rm.score_ids([ids])[0], direct, rtol=0, atol=1e-6)


def test_body_starts_from_base_weights_and_head_is_fresh(tiny_model_dir, tmp_path):
    out = train_reward_model(tiny_model_dir, keyword_rows(8, seed=2), tmp_path / "rm", steps=1, lr=1e-12, seed=0)
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    rm = load_file(str(out / "model.safetensors"))
    for name in ("model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight", "model.norm.weight"):
        torch.testing.assert_close(rm[name], base[name], rtol=0, atol=1e-6)
    assert "score.weight" in rm and rm["score.weight"].shape[0] == 1 and "lm_head.weight" not in rm


def test_scoring_is_batch_invariant(trained):
    rm = RewardModel.from_pretrained(trained, batch_size=8)
    rows = keyword_rows(8, seed=3)
    seqs = [rm.encode(r.prompt, r.response) for r in rows]
    assert len({len(s) for s in seqs}) > 3  # real padding in the batch of 8
    batched = rm.score_ids(seqs)
    single = torch.cat([rm.score_ids([s]) for s in seqs])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_text_and_rollout_encodings_agree(trained):
    rm = RewardModel.from_pretrained(trained)
    tok = rm.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "count one two"}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]  # what the policy generates from
    completion = tok("one two three", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert encode_pair(tok, "count one two", "one two three") == prompt_ids + completion
    rollout = Rollout(0, 0, prompt_ids, completion, [0.0] * len(completion), "stop")
    torch.testing.assert_close(rm.score_rollouts([rollout]), rm.score_texts(["count one two"], ["one two three"]))


def test_train_rm_from_config_helpsteer2(tiny_model_dir, tmp_path):
    data = tmp_path / "hs2.jsonl"
    rows = [
        {
            "prompt": r.prompt,
            "response": r.response,
            "helpfulness": 4 * r.score,
            "correctness": 3,
            "coherence": 4,
            "complexity": 1,
            "verbosity": 2,
        }
        for r in keyword_rows(12, seed=4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config()
    cfg.model.path, cfg.data.path, cfg.data.format = str(tiny_model_dir), str(data), "helpsteer2"
    cfg.task.rm_steps, cfg.optim.lr, cfg.trainer.batch_size = 2, 1e-4, 4
    cfg.trainer.output_dir = str(tmp_path / "run")
    loaded = load_scored_rows(cfg.data)
    assert [r.score for r in loaded] == [combine_attributes(r, cfg.data.attribute_weights) for r in rows]
    out = train_rm_from_config(cfg)
    assert out == tmp_path / "run" / "reward_model"
    meta = json.loads((out / META_FILE).read_text())
    assert meta["rows"] == 12 and meta["steps"] == 2 and meta["batch_size"] == 4
    assert AutoModelForSequenceClassification.from_pretrained(str(out)).config.num_labels == 1


def test_bad_rows_are_one_line_errors(tmp_path, tiny_model_dir):
    data = tmp_path / "scores.jsonl"
    data.write_text(
        json.dumps({"prompt": "a", "response": "b", "score": 0.5})
        + "\n"
        + json.dumps({"prompt": "a", "response": "b", "score": 1.5})
        + "\n"
    )
    cfg = Config()
    cfg.model.path, cfg.data.path, cfg.data.format = str(tiny_model_dir), str(data), "score"
    cfg.trainer.output_dir = str(tmp_path / "run")
    with pytest.raises(DataError) as e:  # the data layer's validation, before anything is built
        train_rm_from_config(cfg)
    assert str(e.value) == f"{data}:2: field 'score': 1.5 is outside [0, 1]"
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="reward-model row 1: score must be a number in"):
        train_reward_model(tiny_model_dir, [("p", "r", 2.0)], tmp_path / "x", steps=1)
    with pytest.raises(ValueError, match="train-rm needs model.path"):
        train_rm_from_config(Config())


# --- Rollouts scored by an RM with another tokenizer (decoded, re-encoded) or the same one (ids as they are) ---

# A word-level vocabulary unlike the policy's byte-level BPE: other ids, other special tokens, another template.
OTHER_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[ {{ m['role'] }} ] {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}[ assistant ] {% endif %}"
)


def other_tokenizer() -> PreTrainedTokenizerFast:
    words = sorted(set(WORDS) | {"[", "]", "system", "user", "assistant", "be", "brief", "terse"})
    vocab = {w: i for i, w in enumerate(["[UNK]"] + words + ["[PAD]", "[BOS]", "[EOS]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]"
    )
    hf.chat_template = OTHER_TEMPLATE
    return hf


def random_rm(tokenizer, vocab_size: int) -> RewardModel:
    """A tiny randomly initialised RM; exact-equality checks need no training."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    return RewardModel(LlamaForSequenceClassification(config).eval(), tokenizer, batch_size=4)


@pytest.fixture(scope="module")
def policy_tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def other_rm():
    # A wider embedding than the policy's 300 ids, so raw policy ids are scoreable (and wrong), not an IndexError.
    return random_rm(other_tokenizer(), vocab_size=512)


def policy_rollouts(tok, prompts: list, responses: list[list[str]], finished=lambda i, j: True) -> list[Rollout]:
    """Rollouts as the engine returns them: policy ids, grouped by prompt, EOS when the sample finished."""
    out = []
    for i, (prompt_ids, texts) in enumerate(zip(encode_prompts(tok, prompts), responses)):
        for j, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if finished(i, j) else [])
            out.append(Rollout(i, j, prompt_ids, ids, [0.0] * len(ids), "stop" if finished(i, j) else "length"))
    return out


PROMPTS = ["count one two", "sort red blue green", "is the cat on the mat"]
RESPONSES = [["one two three", "three"], ["blue green red", "red blue", "green"], ["yes the cat sat on the mat"]]


def test_other_tokenizer_scores_rollouts_as_their_texts(other_rm, policy_tok):
    assert len(other_rm.tokenizer) != len(policy_tok) and not other_rm.shares_tokenizer(policy_tok)
    rollouts = policy_rollouts(policy_tok, PROMPTS, RESPONSES)
    prompts = [PROMPTS[r.prompt_index] for r in rollouts]
    responses = [RESPONSES[r.prompt_index][r.sample_index] for r in rollouts]
    scored = other_rm.score_rollouts(rollouts, PROMPTS, policy_tok)
    assert torch.equal(scored, other_rm.score_texts(prompts, responses))
    # Passing the policy's ids through would score other tokens (the RM reads [UNK]s and random words).
    raw = other_rm.score_ids([r.prompt_ids + r.completion_ids for r in rollouts])
    assert (scored - raw).abs().min() > 1e-4


def test_other_tokenizer_unfinished_completion_gets_no_eos(other_rm, policy_tok):
    rollouts = policy_rollouts(policy_tok, PROMPTS, RESPONSES, finished=lambda i, j: j == 0)
    assert [r.finish_reason for r in rollouts[:2]] == ["stop", "length"]
    texts = encode_texts(
        other_rm.tokenizer,
        [PROMPTS[r.prompt_index] for r in rollouts],
        [RESPONSES[r.prompt_index][r.sample_index] for r in rollouts],
    )
    expected = [s if r.finish_reason == "stop" else s[:-1] for s, r in zip(texts, rollouts)]
    assert other_rm.reencode(rollouts, PROMPTS, policy_tok) == expected
    assert torch.equal(other_rm.score_rollouts(rollouts, PROMPTS, policy_tok), other_rm.score_ids(expected))


def test_other_tokenizer_message_prompts_use_the_rm_template(other_rm, policy_tok):
    prompts = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": p}] for p in PROMPTS]
    rollouts = policy_rollouts(policy_tok, prompts, RESPONSES)
    sequences = other_rm.reencode(rollouts, prompts, policy_tok)
    bos, system, unk = (other_rm.tokenizer.convert_tokens_to_ids(t) for t in ("[BOS]", "system", "[UNK]"))
    assert sequences[0][:4] == [
        bos,
        other_rm.tokenizer.convert_tokens_to_ids("["),
        system,
        other_rm.tokenizer.convert_tokens_to_ids("]"),
    ]
    assert unk not in {t for s in sequences for t in s}  # every decoded word is in the RM's vocabulary
    expected = other_rm.score_texts(
        [prompts[r.prompt_index] for r in rollouts], [RESPONSES[r.prompt_index][r.sample_index] for r in rollouts]
    )
    assert torch.equal(other_rm.score_rollouts(rollouts, prompts, policy_tok), expected)
    with pytest.raises(ValueError, match="needs their prompts"):
        other_rm.score_rollouts(rollouts, None, policy_tok)


class SpyRM(RewardModel):
    """Records what reaches score_ids."""

    seen: list

    def score_ids(self, sequences):
        self.seen = [list(s) for s in sequences]
        return super().score_ids(sequences)


def test_same_tokenizer_passes_ids_through(tiny_model_dir, policy_tok):
    rm_tok = load_tokenizer(tiny_model_dir)  # another object with the same content: still "the same"
    rm = SpyRM(random_rm(rm_tok, len(rm_tok)).model, rm_tok, batch_size=4)
    rollouts = policy_rollouts(policy_tok, PROMPTS, RESPONSES, finished=lambda i, j: j == 0)
    vocab_calls = []
    spied = load_tokenizer(tiny_model_dir)
    spied.get_vocab = lambda: vocab_calls.append(1) or policy_tok.get_vocab()

    def no_decode(*a, **k):
        raise AssertionError("the same-tokenizer path must not decode")

    spied.decode = spied.batch_decode = no_decode
    raw = [r.prompt_ids + r.completion_ids for r in rollouts]
    for _ in range(2):
        scored = rm.score_rollouts(rollouts, PROMPTS, spied)
        assert rm.seen == raw
    assert len(vocab_calls) == 1  # decided once per policy tokenizer
    assert torch.equal(scored, rm.score_ids(raw))
    assert rm.reencode(rollouts, PROMPTS, policy_tok) == raw  # the text path would agree, only slower
    # A different chat template alone means the prompt ids follow another rendering: not the same.
    spied.chat_template = OTHER_TEMPLATE
    assert not same_tokenizer(spied, rm_tok)
