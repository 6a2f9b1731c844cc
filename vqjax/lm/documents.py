"""Interleaved documents built from bundled data, for the multimodal LM.

MNIST captions: each digit image becomes two documents, caption then image and image then caption, with a caption
drawn from a few templates ("a handwritten seven", "the digit 7", ...). :func:`digit_in_text` reads the digit a
generated caption names (a word or a numeral), or None when it names none or several.
"""

from __future__ import annotations

import re

import numpy as np

from vqjax.lm.vocab import Codes

__all__ = ["DIGIT_WORDS", "CAPTION_TEMPLATES", "caption", "caption_documents", "digit_in_text"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES = ("a handwritten {word}", "the digit {word}", "a {word}", "the number {numeral}",
                     "handwritten digit {numeral}")
_FIND = re.compile(r"\b(" + "|".join(DIGIT_WORDS) + r"|[0-9])\b")


def caption(label: int, template: int) -> str:
    """The ``template``-th caption of digit ``label``."""
    return CAPTION_TEMPLATES[template].format(word=DIGIT_WORDS[label], numeral=label)


def caption_documents(vocab, codes: np.ndarray, labels: np.ndarray, *, seed: int, modality: str = "image",
                      both_orders: bool = True, uncond_fraction: float = 0.0) -> list[np.ndarray]:
    """Id documents of captioned images: ``codes [N, *codes_shape]`` (the images' codes), ``labels [N]``; each
    image gives a caption-then-image document and (``both_orders``) an image-then-caption one, templates drawn
    with ``seed``. A fraction ``uncond_fraction`` of the caption-then-image documents leave the caption out (the
    image alone), so that the model also learns the unconditional image distribution that classifier-free
    guidance contrasts with (``generate(..., guidance=...)``)."""
    if not 0.0 <= uncond_fraction < 1.0:
        raise ValueError(f"caption_documents: uncond_fraction must lie in [0, 1); got {uncond_fraction!r}")
    rng = np.random.default_rng(seed)
    docs = []
    for c, y in zip(np.asarray(codes), np.asarray(labels)):
        text = caption(int(y), int(rng.integers(len(CAPTION_TEMPLATES))))
        alone = uncond_fraction > 0 and rng.random() < uncond_fraction
        docs.append(vocab.encode([Codes(modality, c)] if alone else [text, Codes(modality, c)]))
        if both_orders:
            docs.append(vocab.encode([Codes(modality, c), text]))
    return docs


def digit_in_text(text: str) -> int | None:
    """The one digit ``text`` names (word or numeral), or None for none or several different ones."""
    found = {m if m.isdigit() else str(DIGIT_WORDS.index(m)) for m in _FIND.findall(text.lower())}
    return int(found.pop()) if len(found) == 1 else None
