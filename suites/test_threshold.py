"""Threshold: how far can the sound drift before the model notices? One test per clip and side of the window.

Fails when the model reports no desync within the searched range, or reports it only
beyond --thud-threshold-max seconds (default 0.5; people notice from 0.045 s of audio
lead and 0.125 s of lag, ITU-R BT.1359). ``thud threshold`` reports the full window.
"""

import pytest


@pytest.mark.threshold
def test_the_model_notices_a_desync_within_the_bound(thud_threshold, thud_threshold_case):
    thud_threshold.check(thud_threshold_case)
