"""Identity: a re-encode changes nothing a listener can tell, so no answer may change."""

import pytest
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.identity
@given(data=st.data())
def test_reencoded_clip_gets_the_same_answers(thud, thud_case, data):
    thud.check(thud_case, data)
