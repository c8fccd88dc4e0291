from rlvr.eval.behaviour import behaviour_metrics, think_block


def test_think_block_forms():
    assert think_block("<think>a b</think><answer>3</answer>") == "a b"
    assert think_block("a b c</think> <answer>3</answer>") == "a b c"  # <think> was in the prompt
    assert think_block("no block") is None


def test_hand_values():
    responses = [
        "<think>2+2 is 4. Wait, let me check: yes.</think><answer>4</answer>",
        "It is 5.",
        "Hmm... 1+1</think>2",
        "awaiting nothing, unverified",  # 'wait' / 'verify' inside words do not count
    ]
    m = behaviour_metrics(responses)
    assert m["reflection_rate"] == 0.5
    assert m["think_rate"] == 0.5
    # word counts: "2+2 is 4. Wait, let me check: yes." = 8 words; "Hmm... 1+1" = 2 words
    assert m["think_len_mean"] == 5.0
    m = behaviour_metrics(responses, count_tokens=len, phrases=["is"])
    assert m["reflection_rate"] == 0.5
    assert m["think_len_mean"] == (len("2+2 is 4. Wait, let me check: yes.") + len("Hmm... 1+1")) / 2
    assert behaviour_metrics([])["think_len_mean"] is None
