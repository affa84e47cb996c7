"""Shift: with the audio delayed or advanced by d, sync, offset and sound time follow d."""

import pytest
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.shift
@given(data=st.data())
def test_shifted_audio_is_heard_at_the_new_time(thud, thud_case, data):
    thud.check(thud_case, data)
