"""The streaming normalisation: both forms agree, any chunking agrees, gains cancel."""

import pytest
import torch

from training.running_norm import RunningNormConfig, normalise_chunk, normalise_sequence

CFG = RunningNormConfig(time_constant_s=0.5)  # alpha = 0.02: the exponential phase starts at frame 50
ALPHA = CFG.alpha(100.0)


def _frames(batch=2, frames=700, bands=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    drift = torch.linspace(0, 6, frames)[None, :, None]
    return torch.randn(batch, frames, bands, generator=g) * 2 + drift


def _zeros(x):
    return x.new_zeros(x.shape[0], x.shape[2]), x.new_zeros(x.shape[0], 1)


def test_sequence_form_equals_frame_by_frame_rule():
    x = _frames()
    y, mean, count = normalise_sequence(x, *_zeros(x), ALPHA, CFG)
    # the rule written out plainly, in float64
    m = torch.zeros(2, 5, dtype=torch.float64)
    expected = []
    for n in range(1, x.shape[1] + 1):
        a = max(1.0 / n, ALPHA)
        m = m + a * (x[:, n - 1].double() - m)
        expected.append(torch.clamp((x[:, n - 1].double() - m) / CFG.scale, -CFG.clip, CFG.clip))
    assert torch.allclose(y.double(), torch.stack(expected, 1), atol=1e-5)
    assert torch.allclose(mean.double(), m, atol=1e-5)
    assert count.flatten().tolist() == [700.0, 700.0]


@pytest.mark.parametrize("chunk", [1, 10, 37, 333])
def test_chunked_calls_equal_one_call(chunk):
    x = _frames(seed=1)
    whole, _, _ = normalise_sequence(x, *_zeros(x), ALPHA, CFG)
    for form in (normalise_chunk, normalise_sequence):
        mean, count = _zeros(x)
        parts = []
        for start in range(0, x.shape[1], chunk):
            y, mean, count = form(x[:, start : start + chunk], mean, count, ALPHA, CFG)
            parts.append(y)
        assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-5), form.__name__


def test_a_constant_gain_cancels_once_warmed_up():
    """A gain of g multiplies energies by g^2, i.e. adds log(g^2) to every log-mel value."""
    x = _frames(seed=2)
    y, _, _ = normalise_sequence(x, *_zeros(x), ALPHA, CFG)
    y_loud, _, _ = normalise_sequence(x + 4.6, *_zeros(x), ALPHA, CFG)  # +20 dB
    assert torch.allclose(y, y_loud, atol=1e-4)


def test_outputs_are_clipped():
    x = torch.zeros(1, 100, 3)
    x[:, 60] = 1000.0  # a door slam
    y, _, _ = normalise_sequence(x, *_zeros(x), ALPHA, CFG)
    assert float(y.max()) == pytest.approx(CFG.clip)
