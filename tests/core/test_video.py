"""Lazy video readers: exact random access, indexing, cache, threads, folders, TIFF, bad input."""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import need_shared
from napari_sam2_worms import open_video
from napari_sam2_worms.video import ArrayVideo, LazyVideo, VideoError, VideoNotFoundError

REAL = {
    # name: (frames, height, width, fps, grey)
    "tierpsy_single_worm.avi": (563, 96, 128, 15.0, True),
    "fly_pair_384.mp4": (1100, 384, 384, 15.0, None),
    "mouse_openfield_640.mp4": (2330, 480, 640, 30.0, None),
}


def _ffmpeg(out: Path, vf: str, n: int = 60, extra: tuple[str, ...] = ()) -> Path:
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
        "-i", f"{vf}", "-frames:v", str(n), "-c:v", "libx264", "-g", "10",
        "-bf", "2", "-pix_fmt", "yuv420p", *extra, str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="session")
def small_videos(tmp_path_factory) -> dict[str, Path]:
    """60-frame 64x48 H.264 videos with B-frames and a keyframe every 10 frames."""
    d = tmp_path_factory.mktemp("videos")
    return {
        "colour": _ffmpeg(d / "colour.mp4", "testsrc2=size=64x48:rate=10"),
        "grey": _ffmpeg(d / "grey.mkv", "testsrc2=size=64x48:rate=10,format=gray"),
    }


def _reference(path: Path, fmt: str, stop: int | None = None) -> list[np.ndarray]:
    """Plain sequential PyAV decode (first ``stop`` frames), independent of the reader."""
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format=fmt))
            if stop is not None and len(out) >= stop:
                break
    return out


@pytest.mark.parametrize("name", list(REAL))
def test_real_video_metadata(shared_data, name):
    n, h, w, fps, grey = REAL[name]
    with open_video(shared_data / "videos" / name) as v:
        assert isinstance(v, LazyVideo)
        assert len(v) == n and v.shape[:3] == (n, h, w)
        assert v.fps == pytest.approx(fps, rel=1e-3)
        assert v.dtype == np.uint8 and v.path.name == name
        if grey:
            assert v.ndim == 3
        frame = v[n - 1]  # the last frame decodes
        assert frame.shape == v.shape[1:]


def test_tierpsy_random_access_is_exact(shared_data):
    path = shared_data / "videos" / "tierpsy_single_worm.avi"
    ref = _reference(path, "gray")
    assert len(ref) == 563
    rgb0 = _reference(path, "rgb24")[0].astype(int)
    assert np.abs(rgb0[..., 0] - rgb0[..., 2]).max() <= 2  # grey stored as YUV
    order = np.random.default_rng(0).permutation(563)[:200]
    with open_video(path, cache_frames=4) as v:
        assert v.ndim == 3
        for i in order:
            np.testing.assert_array_equal(v[int(i)], ref[i], err_msg=f"frame {i}")


def test_fly_random_access_is_exact(shared_data):
    path = shared_data / "videos" / "fly_pair_384.mp4"
    with open_video(path, cache_frames=2) as v:
        fmt = "gray" if v.ndim == 3 else "rgb24"
        ref = _reference(path, fmt, stop=420)  # 3 GOPs
        for i in np.random.default_rng(1).choice(420, 25, replace=False):
            np.testing.assert_array_equal(v[int(i)], ref[i], err_msg=f"frame {i}")


@pytest.mark.parametrize("kind", ["colour", "grey"])
def test_small_video_random_and_sequential(small_videos, kind):
    path = small_videos[kind]
    with open_video(path, cache_frames=1) as v:
        assert v.shape == ((60, 48, 64, 3) if kind == "colour" else (60, 48, 64))
        ref = _reference(path, "rgb24" if kind == "colour" else "gray")
        assert not np.array_equal(ref[0], ref[1])
        for i in [59, 0, 33, 31, 10, 9, 58, 21, 20, 1]:  # across GOPs, backwards, forwards
            np.testing.assert_array_equal(v[i], ref[i], err_msg=f"frame {i}")
        np.testing.assert_array_equal(v[:], np.stack(ref))  # sequential decode


def test_indexing_like_numpy(small_videos):
    with open_video(small_videos["colour"]) as v:
        full = np.asarray(v)
        assert full.shape == v.shape
        for key in [
            5, -1, np.int64(7), slice(2, 4), slice(None, None, 7), slice(50, 10, -9),
            [3, 1, 3], np.array([[0, 1], [2, 3]]), np.arange(60) % 7 == 0,
            (5, slice(None), slice(None)), (slice(2, 4), 10, slice(3, 9), 0), (..., 1),
            (4, ...), (np.array([1, 2]), slice(None, 5)), (),
        ]:  # fmt: skip
            np.testing.assert_array_equal(v[key], full[key], err_msg=repr(key))
        with pytest.raises(IndexError):
            v[60]
        with pytest.raises(IndexError):
            v[[0, 60]]


def test_cache_is_bounded(small_videos):
    with open_video(small_videos["colour"], cache_frames=5) as v:
        for i in range(0, 60, 3):
            v[i]
        assert len(v._cache) <= 5
    with open_video(small_videos["colour"], cache_bytes=3 * 48 * 64 * 3) as v:
        v[:30]
        assert v._cache_nbytes <= 3 * 48 * 64 * 3
        assert not v[0].flags.writeable


def test_threads_read_exact_frames(small_videos):
    path = small_videos["colour"]
    ref = _reference(path, "rgb24")
    errors: list[str] = []
    with open_video(path, cache_frames=2) as v:

        def work(seed):
            for i in np.random.default_rng(seed).integers(0, 60, 40):
                if not np.array_equal(v[int(i)], ref[i]):
                    errors.append(f"frame {i}")

        threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []


def test_close_and_large_array_warning(small_videos, caplog, monkeypatch):
    from napari_sam2_worms.video import _base

    v = open_video(small_videos["grey"])
    monkeypatch.setattr(_base, "LARGE_ARRAY_BYTES", 100)
    with caplog.at_level(logging.WARNING):
        assert np.asarray(v).shape == (60, 48, 64)
    assert "materialising" in caplog.text
    v.close()
    with pytest.raises(VideoError, match="closed"):
        v[1]


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoNotFoundError, match=r"nope\.mp4") as info:
        open_video(path)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a video\n" * 50, bytes(range(256)) * 64],
    ids=["empty", "text", "garbage"],
)
def test_not_a_video(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=r"bad\.mp4"):
        open_video(path)


def test_corrupt_middle_is_an_error_or_readable(tmp_path, small_videos):
    data = bytearray(small_videos["colour"].read_bytes())
    rng = np.random.default_rng(0)
    data[200:] = rng.integers(0, 256, len(data) - 200, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(VideoError, match=r"corrupt\.mp4"):
        open_video(path)


@pytest.mark.parametrize("name", ["tierpsy_single_worm.avi", "small", "small_mkv"])
def test_truncated_video_gives_readable_frames(tmp_path, small_videos, name, caplog):
    src = {"small": small_videos["colour"], "small_mkv": small_videos["grey"]}.get(name)
    src = src or need_shared("videos", name)
    data = src.read_bytes()
    path = tmp_path / f"cut{src.suffix}"
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        try:
            v = open_video(path)
        except VideoError as exc:  # e.g. mp4 whose index (moov) is at the end
            assert "cut" in str(exc)
            return
    with v:
        full = len(_reference(src, "gray"))
        assert 0 < len(v) < full
        assert "truncated" in caplog.text
        ref = _reference(src, "gray" if v.ndim == 3 else "rgb24")
        last = len(v) - 1
        np.testing.assert_array_equal(v[last], ref[last])
        np.testing.assert_array_equal(v[last // 2], ref[last // 2])


def test_folder_natural_order_and_padding(tmp_path, caplog):
    from PIL import Image

    sizes = {1: (20, 10), 2: (20, 10), 10: (24, 12)}  # (w, h)
    for k, (w, h) in sizes.items():
        Image.fromarray(np.full((h, w), k, np.uint8)).save(tmp_path / f"frame{k}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        v = open_video(tmp_path, fps=7)
    assert "differ" in caplog.text
    assert v.shape == (3, 12, 24) and v.fps == 7
    assert [int(v[i].max()) for i in range(3)] == [1, 2, 10]  # frame2 before frame10
    assert v[0][10:, :].max() == 0 and v[0][:10, :20].min() == 1  # padded bottom/right


def test_folder_colour_jpeg(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(3):
        img = np.zeros((16, 16, 3), np.uint8)
        img[..., k] = 200 + rng.integers(0, 10)
        Image.fromarray(img).save(tmp_path / f"{k:03d}.jpg")
    with open_video(tmp_path) as v:
        assert v.shape == (3, 16, 16, 3)
        assert v[1][..., 1].mean() > 150 and v[1][..., 0].mean() < 50


def test_empty_folder(tmp_path):
    with pytest.raises(VideoError, match="no image frames"):
        open_video(tmp_path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_stack(tmp_path, compression):
    import tifffile

    data = np.random.default_rng(0).integers(0, 60000, (7, 10, 12), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, compression=compression)
    with open_video(path) as v:
        assert v.shape == data.shape and v.dtype == np.uint16
        assert (v._memmap is not None) == (compression is None)
        np.testing.assert_array_equal(v[[6, 0, 3]], data[[6, 0, 3]])
    rgb = np.random.default_rng(1).integers(0, 255, (4, 8, 9, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb", compression=compression)
    with open_video(tmp_path / "rgb.tiff") as v:
        assert v.shape == rgb.shape
        np.testing.assert_array_equal(v[2], rgb[2])


def test_array_video():
    data = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    v = ArrayVideo(data, fps=12)
    assert v.shape == (5, 4, 3) and len(v) == 5 and v.fps == 12 and v.ndim == 3
    np.testing.assert_array_equal(v[1:3, 2], data[1:3, 2])
    np.testing.assert_array_equal(np.asarray(v), data)
    with pytest.raises(ValueError, match="T, H, W"):
        ArrayVideo(np.zeros((2, 3, 4, 5)))
