"""Mute: with the audio silenced, a model that hears says there is no sound."""

import pytest
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.mute
@given(data=st.data())
def test_muted_clip_has_no_sound(thud, thud_case, data):
    thud.check(thud_case, data)
