"""ESResNeXt-fbsp: AudioCLIP's tensor layout, the fbsp front end's semantics, strict loading."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import AudioEncoderConfig
from model.encoders.checkpoints import load_audioclip_audio_weights, read_state_dict
from model.encoders.esresnext import ESResNeXtFBSP, LinearFBSP, adaptive_max_pool2d
from model.errors import CheckpointError, InvalidInputError

TOY = AudioEncoderConfig(
    sample_rate=16000, clip_seconds=0.5, n_fft=128, hop_length=64, win_length=100, window="hann",
    base_width=8, groups=2, width_per_group=2, layers=(1, 1, 1, 1), attention=True, output_dim=24,
)


def audioclip_audio_contract() -> dict[str, tuple[int, ...]]:
    """The ``audio.*`` tensors of AudioCLIP's checkpoint and their shapes, from AudioCLIP's code.

    AudioCLIP builds ``ESResNeXtFBSP(n_fft=2048, hop_length=561, win_length=1654,
    window='blackmanharris', normalized=True, onesided=True, num_classes=1024,
    apply_attention=True)``: a ResNeXt-50 32x4d (torchvision's layout) on 3 input channels, five
    ``Attention2d`` branches (depthwise conv, pointwise conv, batch norm), an fc to 1024, the window
    buffer and ``LinearFBSP(1025, bias=False)``, whose ``bias`` is an empty parameter.
    """
    keys: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.{leaf}"] = (c,)
        keys[f"{name}.num_batches_tracked"] = ()

    keys["window"] = (1654,)
    for leaf in ("m", "fb", "fc"):
        keys[f"fbsp.{leaf}"] = (1025,)
    keys["fbsp.bias"] = (0,)
    keys["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        width = planes * 4 // 64 * 32  # torchvision: int(planes * width_per_group / 64) * groups
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            keys[f"{p}.conv1.weight"] = (width, inplanes, 1, 1)
            bn(f"{p}.bn1", width)
            keys[f"{p}.conv2.weight"] = (width, width // 32, 3, 3)
            bn(f"{p}.bn2", width)
            keys[f"{p}.conv3.weight"] = (planes * 4, width, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    attention = {  # name: (in, out, kernel)
        "att1": (64, 256, (3, 1)), "att2": (256, 512, (1, 5)), "att3": (512, 1024, (3, 1)),
        "att4": (1024, 2048, (1, 5)), "att5": (2048, 2048, (3, 5)),
    }
    for name, (cin, cout, (kh, kw)) in attention.items():
        keys[f"{name}.conv_depth.weight"] = (cin, 1, kh, kw)
        keys[f"{name}.conv_depth.bias"] = (cin,)
        keys[f"{name}.conv_point.weight"] = (cout, cin, 1, 1)
        keys[f"{name}.conv_point.bias"] = (cout,)
        bn(f"{name}.bn", cout)
    keys["fc.weight"] = (1024, 2048)
    keys["fc.bias"] = (1024,)
    return {f"audio.{k}": v for k, v in keys.items()}


def test_full_size_encoder_has_exactly_audioclip_checkpoint_tensors() -> None:
    with torch.device("meta"):
        encoder = ESResNeXtFBSP(AudioEncoderConfig())
    ours = {f"audio.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    contract = audioclip_audio_contract()
    assert sorted(set(ours) - set(contract)) == []
    assert sorted(set(contract) - set(ours)) == []
    assert {k: s for k, s in ours.items() if contract[k] != s} == {}
    assert len(ours) == 370


def toy_encoder(seed: int) -> ESResNeXtFBSP:
    torch.manual_seed(seed)
    return ESResNeXtFBSP(TOY).eval()


def test_output_and_spectrogram_shapes() -> None:
    encoder = toy_encoder(0)
    waves = torch.randn(3, TOY.clip_samples) * 0.1
    with torch.no_grad():
        spec = encoder.log_power_spectrogram(waves)
        out = encoder(waves)
    n_frames = 1 + math.ceil((TOY.clip_samples - TOY.win_length) / TOY.hop_length)
    assert spec.shape == (3, 3, (TOY.n_fft // 2 + 1) // 3, n_frames)
    assert out.shape == (3, TOY.output_dim)
    assert torch.isfinite(out).all()


def test_samples_of_a_batch_are_encoded_independently() -> None:
    encoder = toy_encoder(0)
    waves = torch.randn(4, TOY.clip_samples) * 0.1
    with torch.no_grad():
        together = encoder(waves)
        apart = torch.cat([encoder(w[None]) for w in waves])
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-5)


def test_fbsp_kernel_matches_its_complex_formula() -> None:
    # K[f, n] = sqrt(fb) * sinc(fb t / m)^m * exp(-i fc t) / sqrt(N), t = pi * linspace(-1, 1, N),
    # computed here with complex arithmetic (complex power of a real base), independently.
    torch.manual_seed(1)
    fbsp = LinearFBSP(33).double()
    with torch.no_grad():
        fbsp.m.uniform_(0.3, 3.0)
        fbsp.fb.uniform_(0.5, 4.0)
        fbsp.fc.uniform_(0.0, 30.0)
    n = 64
    re, im = fbsp.kernel(n)
    t = (math.pi * torch.linspace(-1, 1, n, dtype=torch.float64) + 1e-8)[None]
    m, fb, fc = fbsp.m.detach()[:, None], fbsp.fb.detach()[:, None], fbsp.fc.detach()[:, None]
    arg = fb * t / (m + 1e-8)
    sinc = torch.sin(arg) / arg
    envelope = torch.pow(sinc.to(torch.complex128), m.to(torch.complex128))
    expected = fb.sqrt() * envelope * torch.exp(-1j * fc * t) / math.sqrt(n)
    torch.testing.assert_close(torch.complex(re, im).detach(), expected, rtol=1e-9, atol=1e-12)


def test_untrained_front_end_is_a_spectrogram_peaking_at_a_tones_bin() -> None:
    # At initialisation (m = 0, fb = 1, fc = 0..F-1) filter k is a DFT-like filter of k cycles per
    # frame, so a tone of k0 cycles per n_fft samples peaks in bin k0.
    cfg = AudioEncoderConfig(
        sample_rate=16000, clip_seconds=0.25, n_fft=256, hop_length=128, win_length=256, window="hann",
        base_width=8, groups=2, width_per_group=2, layers=(1, 1, 1, 1), output_dim=8,
    )
    encoder = ESResNeXtFBSP(cfg).eval()
    per_band = (cfg.n_fft // 2 + 1) // 3
    for k0 in (5, 50, 100):
        n = torch.arange(cfg.clip_samples, dtype=torch.float32)
        tone = 0.5 * torch.sin(2 * math.pi * k0 * n / cfg.n_fft)
        with torch.no_grad():
            spec = encoder.log_power_spectrogram(tone[None])[0]  # (3, per_band, T)
        bins = spec.mean(dim=-1).reshape(-1)  # (3 * per_band,), band after band
        assert int(bins.argmax()) == k0
        assert bins.argmax() // per_band == k0 // per_band


def test_front_end_equals_explicit_framing_and_transform() -> None:
    # The documented semantics step by step: rescale, zero-pad (half before, half after) so frames
    # tile the signal, window each frame, centre it in n_fft samples, apply the complex kernel,
    # take the power of the lowest 3 * (F // 3) bins as three bands, in dB.
    encoder = toy_encoder(0)
    with torch.no_grad():
        encoder.fbsp.m.uniform_(0.5, 2.0)
        encoder.fbsp.fb.uniform_(0.5, 2.0)
    c = TOY
    waves = torch.randn(2, c.clip_samples - 7) * 0.2  # a length that needs uneven padding
    x = (waves * 32768.0 + 32768.0) * 2.0 / 65535.0 - 1.0
    n = x.shape[-1]
    n_frames = 1 + math.ceil((n - c.win_length) / c.hop_length)
    pad = (n_frames - 1) * c.hop_length + c.win_length - n
    x = torch.cat([torch.zeros(2, pad // 2), x, torch.zeros(2, pad - pad // 2)], dim=-1)
    index = torch.arange(c.win_length)[None, :] + c.hop_length * torch.arange(n_frames)[:, None]
    frames = x[:, index] * encoder.window  # (B, T, win)
    left = (c.n_fft - c.win_length) // 2
    frames = torch.nn.functional.pad(frames, (left, c.n_fft - c.win_length - left))  # (B, T, n_fft)
    with torch.no_grad():
        k_re, k_im = encoder.fbsp.kernel(c.n_fft)
        kernel = torch.complex(k_re, k_im)  # (F, n_fft)
        spec = frames.to(torch.complex64) @ kernel.T  # (B, T, F)
        power = spec.abs().square().transpose(1, 2)  # (B, F, T)
        per_band = power.shape[1] // 3
        expected = 10 * torch.log10(power[:, : 3 * per_band].reshape(2, 3, per_band, n_frames).clamp_min(1e-18))
        got = encoder.log_power_spectrogram(waves)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-3)


def write_audioclip_file(path, encoder: ESResNeXtFBSP, extra: dict | None = None) -> dict:
    state = {f"audio.{k}": v.clone() for k, v in encoder.state_dict().items()}
    # AudioCLIP's full checkpoint also holds its own CLIP and logit scales; they are not used.
    state["visual.conv1.weight"] = torch.randn(4, 3, 3, 3)
    state["logit_scale_ai"] = torch.tensor(4.6)
    state.update(extra or {})
    torch.save(state, path)
    return state


def test_round_trip_through_an_audioclip_layout_file(tmp_path) -> None:
    source = toy_encoder(0)
    with torch.no_grad():
        source.fbsp.m.uniform_(0.5, 2.0)
        source.bn1.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "audioclip.pt"
    write_audioclip_file(path, source)

    target = toy_encoder(1)
    assert not torch.equal(target.conv1.weight, source.conv1.weight)
    load_audioclip_audio_weights(target, read_state_dict(path), str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    waves = torch.randn(2, TOY.clip_samples) * 0.1
    with torch.no_grad():
        assert torch.equal(target(waves), source(waves))


def test_batch_norm_step_counters_may_be_absent(tmp_path) -> None:
    source = toy_encoder(0)
    state = {f"audio.{k}": v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    target = toy_encoder(1)
    load_audioclip_audio_weights(target, state, "file")
    assert torch.equal(target.fc.weight, source.fc.weight)


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (lambda s: s.pop("audio.layer2.0.conv2.weight"), "audio.layer2.0.conv2.weight", "missing"),
        (lambda s: s.__setitem__("audio.att6.bn.weight", torch.ones(3)),
         "audio.att6.bn.weight", "unexpected"),
        (lambda s: s.__setitem__("audio.fc.weight", torch.ones(7, 5)), "audio.fc.weight", "(7, 5)"),
        (lambda s: s.pop("audio.fbsp.bias"), "audio.fbsp.bias", "missing"),
    ],
    ids=["missing", "unexpected", "mis-shaped", "empty-fbsp-bias"],
)
def test_mismatched_file_names_the_key_and_changes_nothing(tmp_path, edit, key, words) -> None:
    path = tmp_path / "audioclip.pt"
    state = {f"audio.{k}": v.clone() for k, v in toy_encoder(0).state_dict().items()}
    edit(state)
    torch.save(state, path)
    target = toy_encoder(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_audioclip_audio_weights(target, read_state_dict(path), str(path))
    assert info.value.key == key
    assert words in str(info.value) and str(path) in str(info.value)
    if words.startswith("("):
        assert f"{tuple(target.fc.weight.shape)}" in str(info.value)  # both shapes are named
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_a_file_without_audio_tensors_is_refused(tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="audio"):
        load_audioclip_audio_weights(toy_encoder(0), read_state_dict(path), str(path))


def test_malformed_waveforms_are_refused() -> None:
    encoder = toy_encoder(0)
    with pytest.raises(InvalidInputError) as info:
        encoder(torch.zeros(TOY.clip_samples))
    assert info.value.field == "waveforms"
    with pytest.raises(InvalidInputError):
        encoder(torch.zeros(1, TOY.win_length - 1))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"win_length": 300, "n_fft": 256}, "win_length"),
        ({"window": "kaiser"}, "window"),
        ({"layers": (1, 1, 1)}, "layers"),
        ({"groups": 0}, "groups"),
        ({"hop_length": 0}, "hop_length"),
    ],
)
def test_config_validation_names_the_field(change, field) -> None:
    fields = {**TOY.__dict__, **change}
    with pytest.raises(ValueError, match=f"^{field}:"):
        AudioEncoderConfig(**fields)


@pytest.mark.parametrize(
    "size_in, size_out", [((11, 31), (6, 16)), ((7, 5), (1, 1)), ((8, 8), (4, 4)), ((9, 13), (9, 7))]
)
def test_exportable_adaptive_max_pool_equals_pytorchs(size_in, size_out) -> None:
    x = torch.randn(2, 3, *size_in)
    assert torch.equal(adaptive_max_pool2d(x, size_out), torch.nn.functional.adaptive_max_pool2d(x, size_out))
