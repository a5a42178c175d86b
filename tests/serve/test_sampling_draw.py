"""The engine's one-uniform draw (:func:`oikyo.serve.engine.sampling.draw`): the right distribution, never a
token of probability 0, and the same token for the same seed."""

from __future__ import annotations

import torch

from oikyo.serve.engine.sampling import draw, make_generator


def test_draws_follow_the_distribution_and_skip_impossible_tokens():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.0, 0.3])
    generator = make_generator(0)
    counts = torch.zeros(5)
    for _ in range(20_000):
        counts[draw(probs, generator)] += 1
    assert counts[1] == 0 and counts[3] == 0
    # 20,000 draws: each share within 4 standard deviations (<= 0.014) of its probability
    assert torch.allclose(counts / 20_000, probs, atol=0.014), counts / 20_000


def test_unnormalised_and_peaked_distributions():
    assert draw(torch.tensor([0.0, 0.0, 2.5]), make_generator(1)) == 2  # sums to 2.5, not 1
    vocab = torch.zeros(49_152)
    vocab[-1] = 1.0  # the last token: the running sum's end
    assert all(draw(vocab, make_generator(seed)) == 49_151 for seed in range(20))


def test_a_seed_gives_the_same_tokens_and_uses_one_number_per_draw():
    probs = torch.softmax(torch.randn(1000, generator=torch.Generator().manual_seed(3)), dim=-1)
    first = [draw(probs, make_generator(7)) for _ in range(3)]
    assert len(set(first)) == 1
    a, b = make_generator(9), make_generator(9)
    assert [draw(probs, a) for _ in range(50)] == [draw(probs, b) for _ in range(50)]
    # one float64 uniform per draw: after a draw, the stream is where one plain uniform leaves it
    c, d = make_generator(11), make_generator(11)
    draw(probs, c)
    torch.rand((), generator=d, dtype=torch.float64)
    assert torch.rand(4, generator=c).tolist() == torch.rand(4, generator=d).tolist()
