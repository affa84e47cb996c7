"""Swap: with another clip's sound in place, the heard sound follows the donor."""

import pytest
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.swap
@given(data=st.data())
def test_swapped_sound_follows_the_donor(thud, thud_case, data):
    thud.check(thud_case, data)
