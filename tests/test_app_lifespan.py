"""What the app's lifespan sets for the process while it serves, and gives back."""

from __future__ import annotations

import gc

from gateway.app import create_app
from gateway.runtime import YOUNG_COLLECTION_EVERY, Runtime
from tests.support import LiveServer


def test_a_serving_app_collects_young_objects_less_often_and_restores_the_collector(runtime: Runtime):
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])
    try:
        with LiveServer(create_app(runtime=runtime)):
            assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *before[1:])
        assert gc.get_threshold() == (700, *before[1:])
    finally:
        gc.set_threshold(*before)
