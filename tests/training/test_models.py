"""The models stream exactly as they run offline, and padding never leaks into results."""

import numpy as np
import pytest
import torch

from training.models import RRModel


def _chunked(model, x, sizes):
    """The outputs after the last chunk, with the phase logits of every chunk joined in time."""
    state = model.initial_state(x.shape[0])
    i = 0
    phases = []
    for n in sizes:
        out, state = model.forward_chunk(x[:, i : i + n], state)
        phases.append(out.phase_logits)
        i += n
    assert i == x.shape[1]
    return out._replace(phase_logits=torch.cat(phases, dim=1))


def _random_chunking(total, rng):
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(min(rng.integers(1, 40), total - sum(sizes))))
    return sizes


@pytest.mark.parametrize("model_type", ["tclstm", "lstm"])
@pytest.mark.parametrize("units", [16, 32, 64])
def test_chunked_equals_whole(model_type, units):
    torch.manual_seed(units)
    model = RRModel(model_type, units).eval()
    model.set_feature_stats(torch.randn(40), torch.rand(40) + 0.5)
    x = torch.randn(3, 250, 40)
    rng = np.random.default_rng(units)
    with torch.no_grad():
        whole = model(x)
        for _ in range(3):
            sizes = _random_chunking(250, rng)
            chunked = _chunked(model, x, sizes)
            for a, b in zip(whole, chunked, strict=True):
                assert torch.allclose(a, b, atol=1e-5), (sizes[:5], (a - b).abs().max())
        one_by_one = _chunked(model, x, [1] * 250)
        assert torch.allclose(whole.rr_z, one_by_one.rr_z, atol=1e-5)


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = RRModel("tclstm", 32).eval()
    a, b = torch.randn(1, 120, 40), torch.randn(1, 200, 40)
    padded = torch.zeros(2, 200, 40)
    padded[0, :120], padded[1] = a[0], b[0]
    with torch.no_grad():
        batch = model(padded, torch.tensor([120, 200]))
        alone_a, alone_b = model(a), model(b)
    for field in range(4):
        assert torch.allclose(batch[field][0], alone_a[field][0], atol=1e-5)
        assert torch.allclose(batch[field][1], alone_b[field][0], atol=1e-5)
    assert torch.allclose(batch.phase_logits[0, :120], alone_a.phase_logits[0], atol=1e-5)


@pytest.mark.parametrize("norm", ["running", "global"])
def test_running_norm_makes_the_model_deaf_to_gain(norm):
    """A gain multiplies energies: with running normalisation the phase output stays (after warm-up);
    with the paper's global standardisation it moves."""
    torch.manual_seed(1)
    model = RRModel("tclstm", 16, frame_stride=5, norm=norm).eval()
    x = torch.randn(1, 1200, 40)
    with torch.no_grad():
        quiet, loud = model(x).phase_logits, model(x + 4.6).phase_logits  # +20 dB
    warm = slice(100, None)  # after 5 s (100 steps of 50 ms)
    same = torch.allclose(quiet[:, warm], loud[:, warm], atol=1e-3)
    assert same if norm == "running" else not same


def test_architecture_matches_the_paper():
    model = RRModel("tclstm", 32)
    assert model.conv.kernel_size == (3,) and model.conv.out_channels == 40  # as many filters as features
    assert model.lstm.hidden_size == 32 and model.lstm.num_layers == 1
    assert model.breath_embedding[0].out_features == 32
    assert model.noise_embedding[0].out_features == 8  # a quarter of the size
    assert model.breath_head.out_features == 3 and model.noise_head.out_features == 2
    assert RRModel("lstm", 32).conv is None


def test_count_head_scales_with_duration():
    """Same frames repeated: the mean embedding is the same, so the count doubles with the duration."""
    torch.manual_seed(0)
    model = RRModel("lstm", 16).eval()
    model.set_label_stats(20.0, 5.0)
    with torch.no_grad():
        model.rc_rate_head.bias.fill_(10.0)  # keep the rate positive whatever the input
        x = torch.zeros(1, 300, 40)
        short, long = model(x[:, :150]), model(x)
    # all-zero input: the LSTM reaches a fixed point quickly, so per-frame outputs are near constant
    assert float(long.rc) == pytest.approx(2 * float(short.rc), rel=0.05)


def _stride_chunking(total, stride, rng):
    """Random chunk lengths, each a whole number of stride groups."""
    sizes = []
    while sum(sizes) < total:
        sizes.append(stride * int(min(rng.integers(1, 12), (total - sum(sizes)) // stride)))
    return sizes


@pytest.mark.parametrize("model_type", ["tclstm", "lstm"])
@pytest.mark.parametrize("stride", [2, 5])
def test_strided_chunked_equals_whole(model_type, stride):
    torch.manual_seed(stride)
    model = RRModel(model_type, 32, frame_stride=stride).eval()
    model.set_feature_stats(torch.randn(40), torch.rand(40) + 0.5)
    x = torch.randn(3, 250, 40)
    rng = np.random.default_rng(stride)
    with torch.no_grad():
        whole = model(x)
        for sizes in [_stride_chunking(250, stride, rng) for _ in range(3)] + [[10] * 25]:
            chunked = _chunked(model, x, sizes)
            for a, b in zip(whole, chunked, strict=True):
                assert torch.allclose(a, b, atol=1e-5), (sizes[:5], (a - b).abs().max())
        # a trailing partial group is not used offline: 250 + stride - 1 frames answer like 250
        longer = model(torch.cat([x, torch.randn(3, stride - 1, 40)], dim=1))
        assert torch.allclose(longer.rr_z, whole.rr_z, atol=1e-5)


def test_stride_changes_the_model_and_refuses_partial_chunks():
    torch.manual_seed(0)
    plain, strided = RRModel("tclstm", 16), RRModel("tclstm", 16, frame_stride=5)
    strided.load_state_dict(plain.state_dict())  # same weights: only the pooling differs
    x = torch.randn(1, 100, 40)
    with torch.no_grad():
        assert not torch.allclose(plain(x).rr_z, strided(x).rr_z)
    with pytest.raises(ValueError, match="multiple of the frame stride"):
        strided.forward_chunk(x[:, :7], strided.initial_state())
    with pytest.raises(ValueError, match="frame_stride"):
        RRModel(frame_stride=0)


def test_strided_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = RRModel("tclstm", 32, frame_stride=5).eval()
    a, b = torch.randn(1, 123, 40), torch.randn(1, 200, 40)
    padded = torch.zeros(2, 200, 40)
    padded[0, :123], padded[1] = a[0], b[0]
    with torch.no_grad():
        batch = model(padded, torch.tensor([123, 200]))
        alone_a, alone_b = model(a), model(b)
    for field in range(4):
        assert torch.allclose(batch[field][0], alone_a[field][0], atol=1e-5)
        assert torch.allclose(batch[field][1], alone_b[field][0], atol=1e-5)


def test_strided_count_head_counts_frames_not_steps():
    """The count is rate x minutes heard, whatever the stride: 300 frames are 3 s at any stride."""
    torch.manual_seed(0)
    plain, strided = RRModel("lstm", 16), RRModel("lstm", 16, frame_stride=5)
    strided.load_state_dict(plain.state_dict())
    for m in (plain, strided):
        m.eval().set_label_stats(20.0, 5.0)
        with torch.no_grad():
            m.rc_rate_head.weight.zero_()
            m.rc_rate_head.bias.fill_(1.0)  # a constant 25 breaths/min
    x = torch.randn(1, 300, 40)
    with torch.no_grad():
        assert float(plain(x).rc) == pytest.approx(25.0 * 3 / 60, rel=1e-5)
        assert float(strided(x).rc) == pytest.approx(25.0 * 3 / 60, rel=1e-5)
