"""Writing media files for the tests that read them back (PyAV)."""


def write_video(path, frames, rate=24, gop=None):
    """An MPEG-4 file of uint8 RGB frames ``[T, H, W, 3]`` (nearly lossless), written with PyAV; ``gop``: frames
    between keyframes (the encoder's default when None)."""
    import av  # the test extra

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qmin": "1", "qmax": "2"}
        if gop is not None:
            stream.gop_size = gop
        for i, frame in enumerate(frames):
            f = av.VideoFrame.from_ndarray(frame, format="rgb24")
            f.pts = i
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
