"""/card queues its picture at the shape of the card's picture box, for every layout."""

from __future__ import annotations

import pytest

from bot.services.params import ASPECTS
from storage import generations
from tests.bot.services.conftest import add_subject, give_adapter, requester
from trainer.serving.cards import PICTURE_ASPECT

ALICE = 101


@pytest.mark.parametrize("layout", ["portrait", "landscape", "border"])
async def test_a_card_asks_for_a_picture_shaped_like_its_box(services, layout):
    subject = await services.db.run(add_subject, ALICE, "rraj")
    await services.db.run(give_adapter, services.store, subject)
    queued = await services.imagine.card(requester(ALICE), "rraj person by a fireplace", "Happy holidays!", layout)
    params = (await services.db.run(generations.get_generation, queued.generation_id)).params
    assert ASPECTS[params["aspect"]] == PICTURE_ASPECT[layout]
    ratio_w, ratio_h = PICTURE_ASPECT[layout]
    assert params["width"] * ratio_h == pytest.approx(params["height"] * ratio_w, rel=0.25)  # tiny model: 16 px steps
