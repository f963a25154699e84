"""Requests, prompts, montages and the OpenAI message format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import medvlm
from medvlm.openai_format import data_url_to_image, messages_to_prompt, prompt_to_messages
from medvlm.processing import build_prompt, cited_fact_ids, montage, to_pil


def test_request_validation() -> None:
    grey = np.zeros((8, 8), np.uint8)
    with pytest.raises(medvlm.RequestError, match="question is empty"):
        medvlm.AskRequest(images=[grey], question="  ")
    with pytest.raises(medvlm.RequestError, match="uint8"):
        medvlm.AskRequest(images=[np.zeros((8, 8), np.float32)], question="q")
    with pytest.raises(medvlm.RequestError, match="2 image contexts given for 1 images"):
        medvlm.AskRequest(images=[grey], question="q", contexts=[medvlm.ImageContext()] * 2)
    with pytest.raises(medvlm.RequestError):
        medvlm.GenerationSettings(abstain_threshold=0.3)


def test_grey_arrays_become_rgb() -> None:
    image = to_pil(np.full((5, 7), 200, np.uint8))
    assert image.mode == "RGB" and image.size == (7, 5) and image.getpixel((0, 0)) == (200, 200, 200)


def test_single_image_families_get_a_numbered_montage() -> None:
    views = [np.full((20, 40), v, np.uint8) for v in (50, 100, 150)]
    contexts = [medvlm.ImageContext("CT", "CHEST", d) for d in ("lung window", "mediastinum", "bone")]
    request = medvlm.AskRequest(images=views, question="Any mass?", contexts=contexts)
    single = build_prompt(request, multi_image=False)
    assert len(single.images) == 1 and single.images[0].size == (2 * 336, 2 * 336)
    assert "Montage of 3 views" in single.views[0] and "mediastinum" in single.views[0]
    multi = build_prompt(request, multi_image=True)
    assert len(multi.images) == 3 and multi.views[1] == "Image 2: CT CHEST; mediastinum"
    parts = multi.messages[-1]["content"]
    assert [p["type"] for p in parts].count("image") == 3 and parts[-1]["text"].endswith("Any mass?")
    sheet = montage([Image.new("RGB", (10, 10), (255, 0, 0))] * 5, tile=16)
    assert sheet.size == (48, 32)


def test_facts_are_offered_and_citations_found() -> None:
    facts = [medvlm.KnowledgeFact("RL:effusion", "Effusion blunts the costophrenic angle.", "radlabels")]
    request = medvlm.AskRequest(images=[np.zeros((4, 4), np.uint8)], question="Effusion?", facts=facts)
    text = str(build_prompt(request, True).messages)
    assert "[RL:effusion] Effusion blunts" in text and "(radlabels)" in text
    assert cited_fact_ids("Yes [RL:effusion], see also [unknown].", ["RL:effusion"]) == ["RL:effusion"]


def test_openai_messages_round_trip_losslessly() -> None:
    pixels = (np.random.default_rng(0).random((9, 11, 3)) * 255).astype(np.uint8)
    request = medvlm.AskRequest(images=[pixels], question="What is it?", history=[medvlm.Turn("user", "hi")])
    prompt = build_prompt(request, True)
    messages = prompt_to_messages(prompt)
    url = messages[-1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    back = messages_to_prompt(messages)
    assert back.messages == prompt.messages
    assert np.array_equal(np.asarray(back.images[0]), pixels)
    with pytest.raises(medvlm.RequestError, match="not 'ftp' URLs"):
        data_url_to_image("ftp://host/x.png")
    with pytest.raises(medvlm.RequestError, match="does not hold a readable PNG, JPEG or WebP image") as info:
        data_url_to_image("data:image/png;base64,aGVsbG8=")
    assert " at 0x" not in str(info.value)  # no object reprs in client-facing messages
