"""Lazy video readers: exact random access, indexing, cache, threads, folders, TIFF, bad input."""

from __future__ import annotations

import logging
import subprocess
import threading
from typing import TYPE_CHECKING

import numpy as np
import pytest

from conftest import need_shared
from napari_sam2_worms import open_video
from napari_sam2_worms.video import ArrayVideo, LazyVideo, VideoError, VideoNotFoundError

if TYPE_CHECKING:
    from pathlib import Path

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
    with open_video(path, raw=True) as v:
        assert v.shape == data.shape and v.dtype == np.uint16
        assert (v._memmap is not None) == (compression is None)
        np.testing.assert_array_equal(v[[6, 0, 3]], data[[6, 0, 3]])
    with open_video(path) as v:  # the trackers' and viewer's 8 bits, of the same frames
        assert v.shape == data.shape and v.dtype == np.uint8
        assert v.raw._memmap is not None or compression is not None
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


# -- 12/16-bit and float videos: one 8-bit mapping for trackers and viewer ---------------


def _deep_stacks(video8: np.ndarray) -> dict[str, np.ndarray]:
    """The same frames as a 12-bit camera (0..4095 in uint16), a 16-bit one and float 0..1."""
    v = video8.astype(np.float64) / 255.0
    return {
        "12bit": np.round(v * 4095).astype(np.uint16),
        "16bit": np.round(v * 65535).astype(np.uint16),
        "float": v.astype(np.float32),
    }


@pytest.mark.parametrize("kind", ["12bit", "16bit", "float"])
def test_deep_tiff_stacks_come_in_8_bits_from_their_own_range(tmp_path, small_plate, kind):
    import tifffile

    from napari_sam2_worms.video import ScaledVideo

    deep = _deep_stacks(small_plate.video)[kind]
    path = tmp_path / f"{kind}.tif"
    tifffile.imwrite(path, deep)
    video = open_video(path)
    assert isinstance(video, ScaledVideo) and video.dtype == np.uint8
    frames = np.asarray(video)
    assert frames.dtype == np.uint8 and frames.shape == deep.shape
    # the data's range fills 0..255 (clipping gave a white 12/16-bit frame, a black float one)
    assert frames.min() <= 2 and frames.max() >= 253
    assert frames.std() > 20
    # a linear map of the 8-bit original: same picture, contrast stretched
    ref = small_plate.video.astype(np.float64)
    corr = np.corrcoef(frames.ravel().astype(np.float64), ref.ravel())[0, 1]
    assert corr > 0.995
    lo, hi = video.intensity_range
    assert deep.min() <= lo < hi <= deep.max()
    # every frame uses the same range: one frame read alone equals it in the stack
    np.testing.assert_array_equal(video[5], frames[5])
    np.testing.assert_array_equal(video.get_frame(11), frames[11])
    assert open_video(path, raw=True).dtype == deep.dtype
    video.close()


def test_uint8_videos_are_never_rescaled(tmp_path, small_plate):
    import tifffile

    path = tmp_path / "v8.tif"
    tifffile.imwrite(path, small_plate.video)
    video = open_video(path)
    assert type(video).__name__ == "TiffVideo"
    np.testing.assert_array_equal(np.asarray(video), small_plate.video)


def test_array_video_and_folders_scale_the_same_way(tmp_path, small_plate):
    from PIL import Image

    from napari_sam2_worms.video import intensity_range, to_uint8

    deep = _deep_stacks(small_plate.video)["12bit"]
    arr = ArrayVideo(deep, fps=5)
    assert arr.dtype == np.uint8
    expected = to_uint8(deep, *intensity_range(deep))
    np.testing.assert_array_equal(arr[:], expected)
    np.testing.assert_array_equal(arr.get_frame(3), expected[3])
    np.testing.assert_array_equal(np.asarray(arr), expected)
    assert arr.data is deep  # the original values stay available
    assert ArrayVideo(deep, scale=False).dtype == np.uint16
    folder = tmp_path / "frames16"
    folder.mkdir()
    for i, frame in enumerate(deep):
        Image.fromarray(frame).save(folder / f"f{i}.png")
    np.testing.assert_array_equal(np.asarray(open_video(folder)), expected)
    floats = tmp_path / "framesf"
    floats.mkdir()
    ffloat = _deep_stacks(small_plate.video)["float"]
    for i, frame in enumerate(ffloat):
        Image.fromarray(frame, mode="F").save(floats / f"f{i}.tif")
    got = np.asarray(open_video(floats))
    np.testing.assert_array_equal(got, to_uint8(ffloat, *intensity_range(ffloat)))


def test_scaling_survives_flat_nan_and_outliers():
    from napari_sam2_worms.video import intensity_range, to_uint8

    flat = np.full((3, 8, 8), 1000, np.uint16)
    lo, hi = intensity_range(flat)
    assert hi > lo and to_uint8(flat, lo, hi).max() == 0
    f = np.linspace(0, 1, 3 * 64, dtype=np.float32).reshape(3, 8, 8)
    f[0, 0, 0] = np.nan
    out = to_uint8(f, *intensity_range(f))
    assert out[0, 0, 0] == 0 and out.max() == 255
    hot = np.full((4, 100, 100), 1000, np.uint16)
    hot[:, 40:60, 40:60] = 3000  # an animal of 4 % of the frame
    hot[:, 0, 0] = 65535  # a hot pixel does not squeeze the picture
    out = to_uint8(hot, *intensity_range(hot))
    assert out[0, 50, 50] == 255 and out[0, 10, 10] == 0


def test_sam2_frames_of_a_12_bit_video_are_a_proper_image(tmp_path, small_plate):
    """SAM 2's input tensor from a 12-bit stack is the picture, not a white frame."""
    import tifffile

    from napari_sam2_worms.backends.sam2.frames import IMG_MEAN, IMG_STD, LazySam2Frames

    deep = _deep_stacks(small_plate.video)["12bit"]
    path = tmp_path / "v12.tif"
    tifffile.imwrite(path, deep)
    video = open_video(path)
    frames = LazySam2Frames(video, image_size=64)
    t = frames[0].numpy()
    rgb = t * np.array(IMG_STD).reshape(3, 1, 1) + np.array(IMG_MEAN).reshape(3, 1, 1)
    assert rgb.min() < 0.1 and rgb.max() > 0.9 and rgb.std() > 0.08
    ref = LazySam2Frames(ArrayVideo(video[:]), image_size=64)[0].numpy()
    np.testing.assert_allclose(t, ref, atol=1e-5)
    frames.close()


def test_the_viewer_gets_the_trackers_8_bit_frames(tmp_path, small_plate):
    """The napari reader's layer holds the very frames the backends read."""
    import tifffile

    from napari_sam2_worms.napari._reader import get_reader

    deep = _deep_stacks(small_plate.video)["12bit"]
    path = tmp_path / "v12.tif"
    tifffile.imwrite(path, deep)
    [(layer_data, _meta, kind)] = get_reader(str(path))(str(path))
    assert kind == "image" and layer_data.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(layer_data), np.asarray(open_video(path)))


def test_napari_reader_patterns_are_the_video_suffixes():
    """napari.yaml's reader patterns list every suffix open_video opens, and no other."""
    from importlib.resources import files

    from npe2 import PluginManifest

    from napari_sam2_worms.video import VIDEO_SUFFIXES

    manifest = PluginManifest.from_file(str(files("napari_sam2_worms") / "napari.yaml"))
    (reader,) = manifest.contributions.readers
    patterns = [p for p in reader.filename_patterns if p != "*"]  # "*": image folders
    assert sorted(patterns) == sorted(f"*{s}" for s in VIDEO_SUFFIXES)
    assert reader.accepts_directories


def test_reader_takes_each_video_suffix(tmp_path):
    from napari_sam2_worms.napari._reader import get_reader
    from napari_sam2_worms.video import VIDEO_SUFFIXES

    for suffix in VIDEO_SUFFIXES:
        path = tmp_path / f"clip{suffix.upper()}"
        path.write_bytes(b"x")
        assert get_reader(str(path)) is not None, suffix
    (tmp_path / "notes.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes.txt")) is None
