"""Re-exports :mod:`vqjax.tokenizers` under its earlier module name (``import vqjax.tokenizer`` keeps working)."""

from vqjax.tokenizers.audio import AudioTokenizer
from vqjax.tokenizers.base import (
                                   FORMAT_VERSION,
                                   SPEC_FILE,
                                   WEIGHTS_FILE,
                                   Tokenizer,
                                   read_spec,
                                   register_tokenizer,
                                   write_spec,
)
from vqjax.tokenizers.graph import GraphTokenizer
from vqjax.tokenizers.image import ImageTokenizer
from vqjax.tokenizers.items import ITEM_IDS_FILE, SemanticIdTokenizer, write_item_ids
from vqjax.tokenizers.timeseries import TimeSeriesTokenizer
from vqjax.tokenizers.video import VideoTokenizer

__all__ = ["Tokenizer", "ImageTokenizer", "AudioTokenizer", "VideoTokenizer", "TimeSeriesTokenizer",
           "SemanticIdTokenizer", "GraphTokenizer", "register_tokenizer", "write_spec", "read_spec",
           "write_item_ids", "FORMAT_VERSION", "SPEC_FILE", "WEIGHTS_FILE", "ITEM_IDS_FILE"]
