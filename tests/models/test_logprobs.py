from __future__ import annotations

import pytest
import torch

from rlvr.models.logprobs import backbone_hidden_states, position_ids_from_mask, response_logprobs

ATOL = 1e-5


def make_batch(vocab: int, prompt_lens: list[int], response_lens: list[int], seed: int = 0):
    """input_ids/attention_mask [N, P + T]: prompts left-padded to P, responses right-padded to T."""
    g = torch.Generator().manual_seed(seed)
    P, T = max(prompt_lens), max(response_lens)
    n = len(prompt_lens)
    input_ids = torch.zeros(n, P + T, dtype=torch.long)  # 0 = <pad>
    attention_mask = torch.zeros(n, P + T, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        input_ids[i, P - p : P + r] = torch.randint(4, vocab, (p + r,), generator=g)
        attention_mask[i, P - p : P + r] = 1
    return input_ids, attention_mask, T


def naive(model, input_ids, attention_mask, T, temperature=1.0):
    """Full [N, L, V] logits, log_softmax, gather: the reference the chunked version must equal."""
    positions = position_ids_from_mask(attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
    z = logits[:, -T - 1 : -1].float() / temperature
    logp = torch.log_softmax(z, dim=-1)
    lp = logp.gather(-1, input_ids[:, -T:, None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1)
    counted = attention_mask[:, -T:].bool()
    return lp * counted, ent * counted


PROMPTS, RESPONSES = [3, 7, 1, 5], [6, 2, 4, 1]


@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 1000])
def test_matches_full_log_softmax(tiny, temperature, chunk_size):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES)
    with torch.no_grad():
        lp, ent = response_logprobs(
            model, ids, mask, T, temperature=temperature, chunk_size=chunk_size, return_entropy=True
        )
        ref_lp, ref_ent = naive(model, ids, mask, T, temperature)
    assert lp.shape == ent.shape == (4, T) and lp.dtype == torch.float32
    torch.testing.assert_close(lp, ref_lp, atol=ATOL, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=ATOL, rtol=0)
    assert (lp[mask[:, -T:].bool()] < 0).all()


def test_matches_unpadded_per_sequence_loop(tiny):
    """Each sequence run alone without any padding: left padding and position ids change nothing."""
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=1)
    with torch.no_grad():
        lp, _ = response_logprobs(model, ids, mask, T, temperature=0.8)
        for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
            seq = ids[i][mask[i].bool()].unsqueeze(0)  # [1, p + r]
            logp = torch.log_softmax(model(seq).logits[0] / 0.8, dim=-1)
            for t in range(r):
                expected = logp[p + t - 1, seq[0, p + t]]
                assert abs(lp[i, t] - expected) < ATOL
            assert (lp[i, r:] == 0).all()


@pytest.fixture
def always_checkpoint(monkeypatch):
    """Checkpoint every logits chunk (by default a call as small as the tiny model's keeps its logits)."""
    import rlvr.models.logprobs as logprobs_module

    monkeypatch.setattr(logprobs_module, "_KEEP_LOGITS", 0)


@pytest.mark.parametrize("mode", ["keep-logits", "checkpointed"])
def test_gradients_match_full_log_softmax(tiny, mode, request):
    if mode == "checkpointed":
        request.getfixturevalue("always_checkpoint")
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=2)
    weights = torch.randn(4, T, generator=torch.Generator().manual_seed(0))
    params = list(model.parameters())

    lp, ent = response_logprobs(model, ids, mask, T, temperature=0.7, chunk_size=3, return_entropy=True)
    grads = torch.autograd.grad((lp * weights).sum() + 0.1 * ent.sum(), params)
    ref_lp, ref_ent = naive(model, ids, mask, T, temperature=0.7)
    ref_grads = torch.autograd.grad((ref_lp * weights).sum() + 0.1 * ref_ent.sum(), params)
    for g, ref in zip(grads, ref_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, ref, atol=ATOL, rtol=1e-4)
    assert max(g.abs().max() for g in grads) > 1e-3  # the comparison is not between zeros


def test_padding_gets_zero_and_no_gradient(tiny):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=3)
    lp, ent = response_logprobs(model, ids, mask, T, return_entropy=True)
    padded = ~mask[:, -T:].bool()
    assert padded.any() and (lp[padded] == 0).all() and (ent[padded] == 0).all()
    hidden_grad = torch.autograd.grad(lp[padded].sum() + ent[padded].sum(), model.lm_head.weight, allow_unused=True)[0]
    assert hidden_grad is None or (hidden_grad == 0).all()


def test_extra_padding_changes_nothing(tiny):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=4)
    more_ids = torch.cat([torch.zeros(4, 3, dtype=torch.long), ids, torch.zeros(4, 2, dtype=torch.long)], dim=1)
    more_mask = torch.cat([torch.zeros(4, 3, dtype=torch.long), mask, torch.zeros(4, 2, dtype=torch.long)], dim=1)
    with torch.no_grad():
        lp, ent = response_logprobs(model, ids, mask, T, return_entropy=True)
        lp2, ent2 = response_logprobs(model, more_ids, more_mask, T + 2, return_entropy=True)
    torch.testing.assert_close(lp2[:, :T], lp, atol=ATOL, rtol=0)
    torch.testing.assert_close(ent2[:, :T], ent, atol=ATOL, rtol=0)
    assert (lp2[:, T:] == 0).all()


def test_entropy_is_none_unless_asked(tiny):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES)
    with torch.no_grad():
        _, ent = response_logprobs(model, ids, mask, T)
    assert ent is None


def test_no_grad_builds_no_graph(tiny):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES)
    with torch.no_grad():
        lp, _ = response_logprobs(model, ids, mask, T)
    assert not lp.requires_grad


def test_autograd_keeps_no_full_vocabulary_tensor(tiny, always_checkpoint):
    """With gradient, what autograd saves outside the checkpointed chunks has no [*, V] tensor bigger than
    one chunk: the memory claim of the module, checked on the saved tensors themselves."""
    model, tok = tiny
    V = model.config.vocab_size
    ids, mask, T = make_batch(len(tok), [6] * 8, [20] * 8)  # 160 response tokens
    chunk = 16
    saved = []

    def pack(t):
        if t.dim() > 0 and t.shape[-1] == V:  # a logits-like tensor (the tiny model's H is not V)
            saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp, ent = response_logprobs(model, ids, mask, T, chunk_size=chunk, return_entropy=True)
    assert max(saved, default=0) <= chunk * V < 160 * V
    assert not saved  # checkpointed: not even one chunk's logits are kept
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        naive(model, ids, mask, T)
    assert max(saved) >= 160 * V  # the hook does see full-vocabulary tensors when they are kept
    (lp.sum() + ent.sum()).backward()  # and the checkpointed backward runs


def test_small_calls_keep_their_logits_large_ones_do_not(tiny, monkeypatch):
    """Below the size budget autograd keeps the chunks' logits (no recomputation); above, it keeps none."""
    import rlvr.models.logprobs as logprobs_module

    model, tok = tiny
    V = model.config.vocab_size
    ids, mask, T = make_batch(len(tok), [6] * 8, [20] * 8)  # 160 response tokens
    saved = []

    def pack(t):
        if t.dim() > 0 and t.shape[-1] == V:
            saved.append(t.numel())
        return t

    for budget, keeps in ((160 * V, True), (160 * V - 1, False)):
        monkeypatch.setattr(logprobs_module, "_KEEP_LOGITS", budget)
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            response_logprobs(model, ids, mask, T, chunk_size=16, return_entropy=True)
        assert bool(saved) == keeps


def test_backbone_hidden_states(tiny):
    model, tok = tiny
    ids, mask, _ = make_batch(len(tok), PROMPTS, RESPONSES)
    with torch.no_grad():
        hidden = backbone_hidden_states(model, ids, mask)
        positions = position_ids_from_mask(mask)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
    assert hidden.shape == (4, ids.shape[1], model.config.hidden_size)
    torch.testing.assert_close(hidden, out.hidden_states[-1], atol=0, rtol=0)
    torch.testing.assert_close(model.lm_head(hidden), out.logits, atol=ATOL, rtol=0)


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 3, 3]]


def test_bfloat16_model_gives_float32_logprobs(tiny):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES)
    import copy

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        lp, _ = response_logprobs(bf16, ids, mask, T)
        ref, _ = naive(model, ids, mask, T)
    assert lp.dtype == torch.float32
    torch.testing.assert_close(lp, ref, atol=0.05, rtol=0)  # bfloat16 weights: about 3 significant digits


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_response_tokens": 0}, "num_response_tokens must be in"),
        ({"num_response_tokens": 13}, "num_response_tokens must be in"),
        ({"num_response_tokens": 6, "temperature": 0.0}, "temperature must be > 0"),
        ({"num_response_tokens": 6, "chunk_size": 0}, "chunk_size must be >= 1"),
    ],
)
def test_bad_arguments(tiny, kwargs, match):
    model, tok = tiny
    ids, mask, _ = make_batch(len(tok), PROMPTS, RESPONSES)  # L = 7 + 6 = 13
    with pytest.raises(ValueError, match=match):
        response_logprobs(model, ids, mask, **kwargs)


def test_bad_layouts(tiny):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES)
    with pytest.raises(ValueError, match="must have the shape of input_ids"):
        response_logprobs(model, ids, mask[:, 1:], T)
    with pytest.raises(ValueError, match=r"input_ids must be \[N, L\]"):
        response_logprobs(model, ids[0], mask[0], T)
    empty_prompt = mask.clone()
    empty_prompt[2, : -T] = 0  # row 2 keeps its response but loses its prompt
    with pytest.raises(ValueError, match="must follow a real token"):
        response_logprobs(model, ids, empty_prompt, T)
    with pytest.raises(ValueError, match="cannot find the backbone"):
        response_logprobs(torch.nn.Linear(2, 2), ids, mask, T)


def test_frozen_backbone_trained_head_gets_the_same_gradient(tiny, always_checkpoint):
    """Only the output projection trains (backbone frozen): still checkpointed, still exact."""
    import copy

    model, tok = tiny
    frozen = copy.deepcopy(model)
    frozen.config.tie_word_embeddings = False
    frozen.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    for p in frozen.model.parameters():
        p.requires_grad_(False)
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=5)
    lp, _ = response_logprobs(frozen, ids, mask, T, chunk_size=4)
    (grad,) = torch.autograd.grad(lp.sum(), frozen.lm_head.weight)
    ref, _ = naive(frozen, ids, mask, T)
    (ref_grad,) = torch.autograd.grad(ref.sum(), frozen.lm_head.weight)
    torch.testing.assert_close(grad, ref_grad, atol=ATOL, rtol=1e-4)
    assert grad.abs().max() > 1e-3


def test_entropy_without_gradient_keeps_no_graph(tiny_dir):
    """entropy_grad=False (the trainer without an entropy bonus): the entropies are a metric, computed without
    a graph. Guards a memory bug: with a graph, the entropy-only nodes of every checkpointed logits chunk kept
    their recomputed [chunk, vocab] tensors after the log-probs' backward (7 GiB on a GSM8K-shaped batch)."""
    from rlvr.models import load_model
    from rlvr.models.logprobs import response_logprobs

    model, _ = load_model(str(tiny_dir))
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    mask = torch.ones_like(ids)
    lp, ent = response_logprobs(model, ids, mask, 4, return_entropy=True, entropy_grad=False)
    assert lp.requires_grad and not ent.requires_grad
    lp_g, ent_g = response_logprobs(model, ids, mask, 4, return_entropy=True)
    assert ent_g.requires_grad  # the default: an entropy bonus needs its gradient
    torch.testing.assert_close(ent, ent_g.detach(), rtol=0, atol=0)
    torch.testing.assert_close(lp, lp_g, rtol=0, atol=0)


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the chunks that go through the fused head Function (rlvr.models.logprobs._HeadLogprobs)."""
    import rlvr.models.logprobs as logprobs_module

    calls = []
    apply = logprobs_module._HeadLogprobs.apply
    monkeypatch.setattr(logprobs_module._HeadLogprobs, "apply", lambda *a: calls.append(a[0].shape[0]) or apply(*a))
    return calls


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fused_chunks_give_the_gradients_of_the_full_log_softmax(tiny, always_checkpoint, fused_calls, temperature):
    """Checkpointed chunks whose entropy is only a metric run as one autograd Function: the same log-probs,
    entropies and parameter gradients as the full log-softmax."""
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=6)
    weights = torch.randn(4, T, generator=torch.Generator().manual_seed(1))
    params = list(model.parameters())
    lp, ent = response_logprobs(model, ids, mask, T, temperature=temperature, chunk_size=3, return_entropy=True,
                                entropy_grad=False)
    assert fused_calls == [3, 3, 3, 3, 1] and not ent.requires_grad  # 13 response tokens in chunks of 3
    grads = torch.autograd.grad((lp * weights).sum(), params)
    ref_lp, ref_ent = naive(model, ids, mask, T, temperature=temperature)
    ref_grads = torch.autograd.grad((ref_lp * weights).sum(), params)
    torch.testing.assert_close(lp, ref_lp.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(ent, ref_ent.detach(), atol=ATOL, rtol=0)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, atol=ATOL, rtol=1e-4)
    assert max(g.abs().max() for g in grads) > 1e-3


def test_fused_chunks_train_a_head_with_a_bias_and_keep_no_logits(tiny, always_checkpoint, fused_calls):
    """An untied output projection with a bias, the backbone frozen: weight and bias gradients as the full
    log-softmax's, and autograd saves no [*, V] tensor for the backward pass."""
    import copy

    model, tok = tiny
    V, H = model.config.vocab_size, model.config.hidden_size
    head = torch.nn.Linear(H, V, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.copy_(torch.randn(V, generator=torch.Generator().manual_seed(2)))
    biased = copy.deepcopy(model)
    biased.config.tie_word_embeddings = False
    biased.lm_head = head
    for p in biased.model.parameters():
        p.requires_grad_(False)
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=7)
    saved = []

    def pack(t):
        if t.dim() == 2 and t.shape[-1] == V:  # logits-like [rows, V] (the weight is [V, H], the bias [V])
            saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp, _ = response_logprobs(biased, ids, mask, T, chunk_size=4, temperature=1.3)
    assert fused_calls == [4, 4, 4, 1] and saved == []
    grads = torch.autograd.grad(lp.sum(), [head.weight, head.bias])
    ref, _ = naive(biased, ids, mask, T, temperature=1.3)
    ref_grads = torch.autograd.grad(ref.sum(), [head.weight, head.bias])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=ATOL, rtol=1e-4)
        assert g.abs().max() > 1e-3


@pytest.mark.parametrize("kwargs", [{"return_entropy": True}, {"top_k": 5}, {"top_p": 0.9}])
def test_chunks_whose_entropy_needs_a_gradient_or_that_filter_are_not_fused(tiny, always_checkpoint, fused_calls,
                                                                            kwargs):
    model, tok = tiny
    ids, mask, T = make_batch(len(tok), PROMPTS, RESPONSES, seed=8)
    response_logprobs(model, ids, mask, T, chunk_size=4, **kwargs)
    assert fused_calls == []
