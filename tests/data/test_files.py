"""Files datasets (vqjax.data.files): every modality on files the test writes, the stable hash splits, sidecar and
manifest captions, files refused at indexing and at decoding, the index reused, tfds-style feature renaming."""

import json
import logging
import os

import numpy as np
import pytest
from media_files import write_video
from PIL import Image

from vqjax.data import files, pipeline


def _png(path, h=12, w=16, mode="L", value=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(abs(hash(path)) % 2**32)
    arr = rng.integers(0, 255, (h, w) + (() if mode == "L" else (3,)), dtype=np.uint8)
    if value is not None:
        arr[:] = value
    Image.fromarray(arr, mode).save(path)
    return arr


def _wav(path, rate=16000, seconds=0.5, freq=440.0):
    import soundfile

    t = np.arange(int(rate * seconds)) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    soundfile.write(path, wave, rate)
    return wave


def test_images_split_sidecar_corrupt_and_index_reuse(tmp_path, caplog):
    root = tmp_path / "photos"
    arrays = {f"a/img{i}.png": _png(str(root / f"a/img{i}.png")) for i in range(30)}
    (root / "a/img3.txt").write_text("a grey square\n")
    (root / "broken.png").write_bytes(b"not a png at all")
    _png(str(root / "big.png"), h=20, w=20)                   # another size: refused without image_size
    data_dir = str(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="vqjax.data"):
        src = pipeline.get_source(f"files:{root}", "train", data_dir)
    assert len(src) == 30 and src.modality == "image"
    reasons = dict(src.skipped)
    assert set(reasons) == {"broken.png", "big.png"} and "image size 20x20" in reasons["big.png"]
    assert "2 of 32 files skipped" in caplog.text and "broken.png" in caplog.text
    keys = [src[i]["key"] for i in range(len(src))]
    assert keys == sorted(keys)
    ex = src[keys.index("a/img3.png")]
    assert ex["caption"] == "a grey square" and ex["image"].dtype == np.uint8 and ex["image"].shape == (12, 16, 1)
    np.testing.assert_array_equal(ex["image"][..., 0], arrays["a/img3.png"])
    # the splits partition the files, and a new file moves no old one
    tr = {e["key"] for e in pipeline.get_source(f"files:{root}", "train[:80%]", data_dir)}
    te = {e["key"] for e in pipeline.get_source(f"files:{root}", "train[80%:]", data_dir)}
    assert tr | te == set(keys) and not tr & te and tr and te
    for i in range(30, 40):
        _png(str(root / f"b/new{i}.png"))
    tr2 = {e["key"] for e in pipeline.get_source(f"files:{root}", "train[:80%]", data_dir)}
    te2 = {e["key"] for e in pipeline.get_source(f"files:{root}", "train[80%:]", data_dir)}
    assert tr <= tr2 and te <= te2 and not tr2 & te
    # the index is kept: a header changed on disk is read again, the others are not
    index_file = next((tmp_path / "data/files_index").iterdir())
    saved = json.loads(index_file.read_text())
    assert set(saved["entries"]) == {*arrays, "broken.png", "big.png", *(f"b/new{i}.png" for i in range(30, 40))}
    with pytest.raises(ValueError, match="one split, 'train'"):
        pipeline.get_source(f"files:{root}", "test", data_dir)
    with pytest.raises(ValueError, match="counts such as"):
        pipeline.get_source(f"files:{root}", "train[:10]", data_dir)
    both = pipeline.get_source(f"files:{root}", "train[:20%]+train[80%:]", data_dir)
    assert {e["key"] for e in both} == {e["key"] for e in pipeline.get_source(f"files:{root}", "train[:20%]",
                                                                               data_dir)} | te2


def test_images_resized_or_cropped_to_the_config(tmp_path):
    root = tmp_path / "imgs"
    _png(str(root / "x.png"), h=20, w=40, mode="RGB")
    _png(str(root / "y.jpg"), h=30, w=30, mode="RGB")
    for resize in ("resize", "crop"):
        src = files.file_source(str(root), "train", data_dir=str(tmp_path / "d"),
                                options={"image_size": (8, 8), "resize": resize, "channels": 1})
        assert len(src) == 2 and all(src[i]["image"].shape == (8, 8, 1) for i in range(2))
    with pytest.raises(ValueError, match="config.files.resize"):
        files.FileOptions.from_mapping({"resize": "stretch"})
    with pytest.raises(ValueError, match="unknown fields"):
        files.FileOptions.from_mapping({"imagesize": (8, 8)})


def test_audio_resampled_mono_wrong_rate_refused_and_manifest(tmp_path, caplog):
    import soundfile

    root = tmp_path / "speech"
    root.mkdir()
    for i in range(6):
        _wav(str(root / f"clip{i}.wav"), rate=22050, freq=200 + 50 * i)
    stereo = np.stack([np.zeros(8000), 0.5 * np.ones(8000)], 1).astype(np.float32)
    soundfile.write(str(root / "stereo.flac"), stereo, 16000)
    _wav(str(root / "phone.wav"), rate=8000)                       # below the wanted rate: refused
    (root / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    (tmp_path / "manifest.csv").write_text("file,text,label\nclip0.wav,zero,0\nclip1.wav,one,1\n")
    with caplog.at_level(logging.WARNING, logger="vqjax.data"):
        src = files.file_source(f"{root}/*.*", "train", data_dir=str(tmp_path / "d"),
                                options={"sample_rate": 16000, "captions": str(tmp_path / "manifest.csv")})
    assert {p for p, _ in src.skipped} == {"phone.wav", "bad.wav"}
    assert "below config.files.sample_rate" in dict(src.skipped)["phone.wav"]
    keys = [src[i]["key"] for i in range(len(src))]
    ex = src[keys.index("clip1.wav")]
    assert ex["sample_rate"] == 16000 and ex["audio"].dtype == np.float32 and ex["audio"].ndim == 1
    assert abs(ex["audio"].size - 8000) <= 1 and ex["caption"] == "one" and ex["label"] == 1
    st = src[keys.index("stereo.flac")]
    np.testing.assert_allclose(st["audio"], 0.25, atol=1e-4)       # the mean of the channels
    # a file that breaks after indexing is reported at decoding and skipped
    (root / "clip2.wav").write_bytes(open(root / "clip2.wav", "rb").read()[:40])
    assert src.read(keys.index("clip2.wav")) is None
    assert src.failures and src.failures[0][0] == "clip2.wav"
    assert src[keys.index("clip2.wav")]["key"] == keys[keys.index("clip2.wav") + 1]


def test_nothing_readable_is_refused(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "a.png").write_bytes(b"no")
    with pytest.raises(ValueError, match="none of its 1 image files is readable"):
        files.file_source(str(root), "train", data_dir=str(tmp_path / "d"))
    with pytest.raises(ValueError, match="no files with a known extension"):
        files.file_source(str(tmp_path / "empty*"), "train", data_dir=str(tmp_path / "d"))


def test_timeseries_csv_npy_parquet_by_column(tmp_path):
    import pandas as pd

    root = tmp_path / "logs"
    root.mkdir()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"t": np.arange(50), "acc_x": rng.normal(size=50), "acc_y": rng.normal(size=50),
                          "note": ["x"] * 50})
    frame.to_csv(root / "a.csv", index=False)
    frame.to_parquet(root / "b.parquet")
    frame[["acc_x"]].to_csv(root / "c.csv", index=False)          # lacks acc_y: refused
    src = files.file_source(str(root), "train", data_dir=str(tmp_path / "d"), options={"columns": ("acc_x", "acc_y")})
    assert [src[i]["key"] for i in range(len(src))] == ["a.csv", "b.parquet"]
    assert "acc_y" in dict(src.skipped)["c.csv"]
    for i in range(2):
        np.testing.assert_allclose(src[i]["signal"], frame[["acc_x", "acc_y"]].to_numpy(np.float32), rtol=1e-6)
        assert src[i]["label"] == -1
    np.save(root / "d.npy", rng.normal(size=(40, 3)).astype(np.float32))
    npy = files.file_source(f"{root}/*.npy", "train", data_dir=str(tmp_path / "d"))
    assert npy[0]["signal"].shape == (40, 3)


def test_video_clips_at_the_config_rate(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "vids" / "moving.mp4"
    path.parent.mkdir()
    frames = np.zeros((25, 24, 32, 3), np.uint8)
    frames[np.arange(25), :, np.arange(25) % 32] = 255
    write_video(path, frames, rate=10)
    src = files.file_source(str(path.parent), "train", data_dir=str(tmp_path / "d"),
                            options={"clip_frames": 5, "frame_rate": 5.0, "image_size": (16, 16)})
    assert len(src) == 2                                           # 25 frames at 10 fps = 12 frames at 5 fps
    clip = src[1]
    assert clip["key"] == "moving.mp4#1" and clip["video"].shape == (5, 16, 16, 3) and clip["frame_rate"] == 5.0

    with pytest.raises(ValueError, match="hold no clip"):
        files.file_source(str(path.parent), "train", data_dir=str(tmp_path / "d3"), options={"clip_frames": 40})


def test_cache_and_feature_renaming(tmp_path):
    root = tmp_path / "imgs"
    for i in range(5):
        _png(str(root / f"{i}.png"), h=4, w=4)
    options = {"cache": True}
    direct = files.file_source(str(root), "train", data_dir=str(tmp_path / "d"))
    cached = files.file_source(str(root), "train", data_dir=str(tmp_path / "d"), options=options)
    assert len(cached) == 5 and os.listdir(tmp_path / "d/files_cache")
    for i in range(5):
        np.testing.assert_array_equal(cached[i]["image"], direct[i]["image"])
        assert cached[i]["key"] == direct[i]["key"]
    renamed = pipeline.get_source(f"files:{root}", "train", str(tmp_path / "d"), features={"picture": "image"})
    assert "picture" in renamed[0] and "image" not in renamed[0]
    with pytest.raises(ValueError, match="lacks; its features are"):
        pipeline.get_source(f"files:{root}", "train", str(tmp_path / "d"), features={"audio": "speech"})


def test_a_late_clip_of_a_long_video_is_read_by_seeking(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "long" / "v.mp4"
    path.parent.mkdir()
    frames = np.zeros((120, 32, 32, 3), np.uint8)
    frames[..., 0] = ((np.arange(120) * 37) % 256)[:, None, None]
    write_video(path, frames, rate=10, gop=12)
    with av.open(str(path)) as container:
        every = [np.asarray(f.to_image().convert("RGB")) for f in container.decode(container.streams.video[0])]
    src = files.file_source(str(path.parent), "train", data_dir=str(tmp_path / "d"),
                            options={"clip_frames": 7, "frame_rate": 5.0})
    assert len(src) == 8
    for k in (0, 5, 7):                                  # frames 2 apart (10 fps read at 5), from frame 14 k
        np.testing.assert_array_equal(src[k]["video"], np.stack(every[14 * k:14 * k + 14:2]))
