"""Shift, Mute, Swap and Identity: what each edit must do to the audio and the events."""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import STANDARD_RATES, make_clip
from thud_mt.errors import InterventionError
from thud_mt.interventions import identity, mute, shift, swap
from thud_mt.media import read_clip, write_clip
from thud_mt.signal import lag_samples, lag_seconds, normalized_correlation, remix, resample

offsets = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)
rates = st.sampled_from(STANDARD_RATES)
channels = st.integers(min_value=1, max_value=2)


def clip_for(offset: float, sample_rate: int, n_channels: int, seed: int = 0):
    # The sound sits where both it and its shifted copy stay inside a 4 s clip.
    return make_clip(sample_rate=sample_rate, channels=n_channels, sound_at=0.5 if offset >= 0 else 3.5, seed=seed)


@given(offset=offsets, sample_rate=rates, n_channels=channels)
def test_shift_moves_a_transient_by_exactly_round_d_times_sr_samples(offset, sample_rate, n_channels) -> None:
    clip = clip_for(offset, sample_rate, n_channels)
    shifted = shift(clip, offset)
    expected = round(offset * sample_rate)
    assert lag_samples(clip.audio, shifted.audio) == expected
    assert shifted.audio.shape == clip.audio.shape
    assert shifted.events[0].audio_time == pytest.approx(clip.events[0].audio_time + expected / sample_rate)
    assert shifted.events[0].visual_time == clip.events[0].visual_time


@given(offset=offsets, sample_rate=rates, n_channels=channels)
def test_shift_survives_an_mp4_round_trip_within_one_millisecond(offset, sample_rate, n_channels) -> None:
    clip = clip_for(offset, sample_rate, n_channels)
    with tempfile.TemporaryDirectory() as tmp:
        back = read_clip(write_clip(shift(clip, offset), Path(tmp) / "s.mp4"))
    assert abs(back.duration - clip.duration) <= 1 / clip.fps
    assert abs(lag_seconds(clip.audio, back.audio, sample_rate) - offset) < 0.001


@given(offset=st.floats(min_value=0.0, max_value=3.0), sample_rate=rates)
def test_shift_there_and_back_restores_the_audio_outside_the_margin(offset, sample_rate) -> None:
    clip = make_clip(sample_rate=sample_rate, sound_at=0.5)
    restored = shift(shift(clip, offset), -offset)
    margin = abs(round(offset * sample_rate))
    n = clip.audio.shape[0]
    assert np.array_equal(restored.audio[: n - margin], clip.audio[: n - margin])
    assert restored.events[0].audio_time == pytest.approx(clip.events[0].audio_time)


def test_positive_shift_delays_and_negative_shift_advances() -> None:
    clip = make_clip(sound_at=2.0)
    assert shift(clip, 0.5).events[0].audio_time == pytest.approx(2.5)
    assert shift(clip, -0.5).events[0].audio_time == pytest.approx(1.5)
    late = int(np.argmax(np.abs(shift(clip, 0.5).audio[:, 0]) > 0.05))
    assert late / clip.sample_rate == pytest.approx(2.5, abs=1e-3)


def test_a_sound_shifted_out_of_the_clip_is_no_longer_heard() -> None:
    shifted = shift(make_clip(sound_at=3.5), 1.0)
    assert shifted.events[0].audio_time is None
    assert shifted.events[0].visual_time == 3.5


def test_shift_records_the_exact_edit_and_edits_compose() -> None:
    clip = shift(mute(make_clip()), 0.25)
    assert [e.op for e in clip.edits] == ["mute", "shift"]
    assert clip.edits[1].params["samples"] == 4000


@given(sample_rate=rates, n_channels=channels)
def test_mute_gives_exact_zeros_and_keeps_the_audio_stream(sample_rate, n_channels) -> None:
    muted = mute(make_clip(sample_rate=sample_rate, channels=n_channels))
    assert muted.audio.shape == (round(4.0 * sample_rate), n_channels)
    assert not np.any(muted.audio)
    assert all(e.audio_time is None and e.sound is None for e in muted.events)
    assert muted.events[0].visual_time == 1.0
    with tempfile.TemporaryDirectory() as tmp:
        path = write_clip(muted, Path(tmp) / "m.mp4")
        with av.open(str(path)) as container:
            assert len(container.streams.audio) == 1


@given(recipient_rate=rates, donor_rate=rates, recipient_channels=channels, donor_channels=channels)
def test_swap_puts_the_donors_audio_in_resampled_and_rechannelled(
    recipient_rate, donor_rate, recipient_channels, donor_channels
) -> None:
    recipient = make_clip(clip_id="r", sample_rate=recipient_rate, channels=recipient_channels, sound_at=2.0)
    donor = make_clip(
        clip_id="d",
        sample_rate=donor_rate,
        channels=donor_channels,
        sound_at=1.0,
        seed=7,
        sound="bark",
        label="dog_barks",
    )
    swapped = swap(recipient, donor, align="start")
    assert swapped.audio.shape == recipient.audio.shape
    expected = remix(resample(donor.audio, donor_rate, recipient_rate), recipient_channels)
    n = min(len(expected), len(swapped.audio))
    assert normalized_correlation(expected[:n], swapped.audio[:n]) > 0.99
    assert normalized_correlation(recipient.audio, swapped.audio) < 0.5


def test_swap_aligns_the_donor_sound_to_the_recipients_visual_event() -> None:
    recipient = make_clip(clip_id="r", sound_at=2.2)
    donor = make_clip(clip_id="d", sound_at=0.7, seed=3, sound="bark", label="dog_barks")
    swapped = swap(recipient, donor)
    seen = [e for e in swapped.events if e.visual_time is not None]
    heard = [e for e in swapped.events if e.audio_time is not None]
    assert [(e.label, e.sound, e.audio_time) for e in seen] == [("object_falls", None, None)]
    assert [(e.sound, e.visual_time) for e in heard] == [("bark", None)]
    assert heard[0].audio_time == pytest.approx(2.2)
    assert lag_seconds(donor.audio, swapped.audio, 16000) == pytest.approx(1.5, abs=1 / 16000)
    assert swapped.edits[-1].params == {"donor": "d", "align": "event", "donor_offset_s": pytest.approx(1.5)}


def test_swap_with_itself_is_refused() -> None:
    clip = make_clip()
    with pytest.raises(InterventionError, match="own donor"):
        swap(clip, clip)


def test_identity_reencodes_but_keeps_timing_and_events() -> None:
    clip = make_clip(sample_rate=22050, sound_at=1.5)
    same = identity(clip)
    assert same.audio.shape == clip.audio.shape
    assert not np.array_equal(same.audio, clip.audio)  # the codec really ran
    assert abs(lag_seconds(clip.audio, same.audio, 22050)) < 1e-4
    assert normalized_correlation(clip.audio, same.audio) > 0.95
    assert same.events == clip.events and same.edits[-1].op == "identity"


def test_edits_leave_the_original_and_the_frames_untouched() -> None:
    clip = make_clip()
    before = clip.audio.copy()
    for edited in (shift(clip, 0.3), mute(clip), identity(clip)):
        assert edited.frames is clip.frames
    assert np.array_equal(clip.audio, before)
    assert not clip.edits


@pytest.mark.debian
@pytest.mark.parametrize("offset", [-2.0, -0.3, 0.04, 0.5, 2.0])
def test_shift_of_a_real_debian_video_survives_the_round_trip(debian_video, tmp_path: Path, offset: float) -> None:
    clip = read_clip(debian_video, max_duration=6.0)
    back = read_clip(write_clip(shift(clip, offset), tmp_path / "shifted.mp4"))
    assert abs(back.duration - clip.duration) <= 1 / clip.fps
    assert abs(lag_seconds(clip.audio, back.audio, clip.sample_rate, max_lag_s=3.0) - offset) < 0.001
