import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlvr.tasks import R1_ZERO_TEMPLATE, get_task, render_prompt

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "What": 3, "is": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>")
    tok.chat_template = CHATML
    return tok


USER = [{"role": "user", "content": "What is 3 + 5?"}]
SYSTEM_USER = [{"role": "system", "content": "Be brief."}, *USER]


def test_chat_template_with_generation_prompt(tokenizer):
    assert render_prompt(tokenizer, USER, "chat") == "<|im_start|>user\nWhat is 3 + 5?<|im_end|>\n<|im_start|>assistant\n"
    assert render_prompt(tokenizer, SYSTEM_USER).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")


def test_chat_needs_a_chat_template(tokenizer):
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, unk_token="<unk>")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template.*'plain' or 'r1_zero'"):
        render_prompt(bare, USER, "chat")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        render_prompt(None, USER, "chat")


def test_r1_zero_is_the_paper_template():
    text = render_prompt(None, USER, "r1_zero")
    assert text.startswith("A conversation between User and Assistant. The user asks a question, and the Assistant solves it.")
    assert "<think> reasoning process here </think> <answer> answer here </answer>." in text
    assert text.endswith("User: What is 3 + 5? Assistant:")  # no "<think>" pre-filled
    assert render_prompt(None, [{"role": "user", "content": "Solve x + 1 = 2"}], "r1_zero").endswith("User: Solve x + 1 = 2. Assistant:")
    with_system = render_prompt(None, SYSTEM_USER, "r1_zero")
    assert "</answer>. Be brief. User: What is 3 + 5? Assistant:" in with_system
    assert R1_ZERO_TEMPLATE.count("{prompt}") == 1


def test_plain():
    assert render_prompt(None, USER, "plain") == "What is 3 + 5?"
    assert render_prompt(None, SYSTEM_USER, "plain") == "Be brief.\n\nWhat is 3 + 5?"


def test_bad_template_and_messages():
    with pytest.raises(ValueError, match="unknown prompt template 'r1zero'; known: chat, r1_zero, plain \\(did you mean 'r1_zero'\\?\\)"):
        render_prompt(None, USER, "r1zero")
    with pytest.raises(ValueError, match="one user message.*got roles \\['user', 'assistant', 'user'\\]"):
        render_prompt(None, [*USER, {"role": "assistant", "content": "8"}, *USER], "plain")
    with pytest.raises(ValueError, match="unknown prompt template"):
        get_task("arithmetic", template="jinja")


def test_task_prompt_uses_its_template(tokenizer):
    task = get_task("arithmetic", system_prompt="Be brief.")
    ex = task.examples("test", limit=1)[0]
    assert task.messages(ex) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ex.question}]
    assert task.prompt(ex, tokenizer).endswith(f"{ex.question}<|im_end|>\n<|im_start|>assistant\n")
    example = get_task("symbol").examples("train")[0]
    assert get_task("symbol").prompt(example).endswith(" Say: " + example.answer)


def test_symbol_prompts_fit_the_tiny_tokenizer():
    tiny = pytest.importorskip("rlvr.models.tiny")
    tok = tiny.make_tiny_tokenizer()
    task = get_task("symbol")
    for ex in task.examples("train") + task.examples("test"):
        ids = tok(task.prompt(ex), add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
