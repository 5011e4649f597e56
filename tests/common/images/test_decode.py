"""common.images.decode: RGB, EXIF, pixel limits, decoding down to the model's size."""

import io

import pytest
from PIL import Image

from common.images.decode import (
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_image,
    original_size,
    read_capped,
    resize_for_model,
)
from common.images.errors import (
    ImageAccessDenied,
    ImageDecodeError,
    ImageLoadError,
    ImageNotFound,
    ImageTooLarge,
)
from common.images.loader import (
    ImageLoader,
    load_image,
)
from converters.geometry import MAX_PIXELS, smart_resize
from tests.common.images.helpers import (
    BLUE,
    EXIF_ORIENTATION,
    RED,
    ROTATE_90_CW,
    close_to,
    encoded,
    png_with_size,
    two_colour,
)

# Decoding -----------------------------------------------------------------------


def test_exif_orientation_is_applied_as_label_studio_shows_it(tmp_path):
    stored = two_colour(40, 20)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encoded(stored, "JPEG", exif=exif, quality=95))

    image = load_image(str(path), loader=ImageLoader(), local_paths=True)

    assert image.size == (20, 40)
    assert image.mode == "RGB"
    # Turned clockwise, the stored left (red) half ends on top.
    assert close_to(image.getpixel((10, 5)), RED)
    assert close_to(image.getpixel((10, 35)), BLUE)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_every_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = decode_image(encoded(two_colour(mode=mode), fmt), source="x")
    assert image.mode == "RGB"
    assert image.size == (40, 20)


def test_more_pixels_than_the_limit_is_refused_before_decoding():
    # The header claims 5000 x 5000 but the pixel data is one byte: the
    # refusal must come from the size check, not from a decode error.
    with pytest.raises(
        ImageTooLarge, match=r"25000000 pixels.*REXLABEL_MAX_IMAGE_PIXELS"
    ):
        decode_image(png_with_size(5000, 5000), source="bomb.png", max_pixels=10**6)


def test_a_decompression_bomb_beyond_pillows_own_limit_is_too_large():
    with pytest.raises(ImageTooLarge, match=r"bomb.png"):
        decode_image(png_with_size(40_000, 40_000), source="bomb.png")


def test_an_image_at_the_limit_loads():
    image = decode_image(encoded(two_colour(40, 20)), source="x", max_pixels=800)
    assert image.size == (40, 20)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_file_is_a_decode_error_naming_it(tmp_path, fmt):
    data = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut"):
        ImageLoader().load(str(path), local_paths=True)


def test_a_non_image_is_a_decode_error(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image at all")
    with pytest.raises(ImageDecodeError, match=r"notes.jpg.*not an image"):
        ImageLoader().load(str(path), local_paths=True)


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(ImageNotFound, match="does not exist"):
        ImageLoader().load(str(tmp_path / "nope.png"), local_paths=True)
    with pytest.raises(ImageNotFound, match="is a directory"):
        ImageLoader().load(str(tmp_path), local_paths=True)


def test_file_urls_load(tmp_path):
    path = tmp_path / "a b.png"
    path.write_bytes(encoded(two_colour()))
    image = ImageLoader().load(
        "file://" + str(path).replace(" ", "%20"), local_paths=True
    )
    assert image.size == (40, 20)


def test_errors_share_one_base_class():
    for cls in (ImageNotFound, ImageAccessDenied, ImageDecodeError, ImageTooLarge):
        assert issubclass(cls, ImageLoadError)


# Model-size resize ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1440, 810), (1428, 812)),
        ((2246, 1590), (1680, 1176)),
        ((112, 112), (112, 112)),
    ],
)
def test_resize_for_model_uses_smart_resize_sizes(size, expected):
    resized = resize_for_model(Image.new("L", size, 128))
    assert resized.size == expected
    assert resized.mode == "RGB"


def test_resize_for_model_keeps_an_image_already_at_size():
    image = two_colour(56, 28)
    assert resize_for_model(image, min_pixels=28 * 28) is image


# Images larger than the model takes ------------------------------------------------


def test_a_10000_square_png_bomb_is_refused_from_its_header(monkeypatch):
    """12 KB on disk, 100 MP in memory: refused before Pillow allocates a pixel
    (the default limit is 32x what the model sees)."""
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge, match=r"10000x10000.*REXLABEL_MAX_IMAGE_PIXELS"):
        decode_image(png_with_size(10_000, 10_000), source="bomb.png")
    assert DEFAULT_MAX_IMAGE_PIXELS == 32 * MAX_PIXELS


def _record_decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Sizes Pillow allocates when it decodes (after any JPEG draft)."""
    from PIL import ImageFile

    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording(self):
        sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording)
    return sizes


def test_a_large_jpeg_is_decoded_at_reduced_scale_to_the_model_size(monkeypatch):
    data = encoded(two_colour(8000, 6000), "JPEG", quality=90)
    sizes = _record_decoded_sizes(monkeypatch)
    image = decode_image(data, source="big.jpg", fit_pixels=MAX_PIXELS)
    fit_h, fit_w = smart_resize(6000, 8000)
    assert image.size == (fit_w, fit_h)
    assert original_size(image) == (8000, 6000)
    assert set(sizes) == {(2000, 1500)}  # DCT scaling by 4, not 48 MP
    assert close_to(image.getpixel((10, 10)), RED)
    assert close_to(image.getpixel((fit_w - 10, 10)), BLUE)


def test_a_jpeg_too_large_even_after_dct_scaling_is_refused():
    data = encoded(two_colour(4000, 4000), "JPEG")  # at most 8x smaller a side
    with pytest.raises(ImageTooLarge, match=r"4000x4000 \(decoded at 500x500\)"):
        decode_image(data, source="x", max_pixels=200_000, fit_pixels=10_000)


def test_a_large_rotated_png_fits_the_model_and_keeps_its_shown_size():
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    data = encoded(two_colour(3000, 2000), "PNG", exif=exif)
    image = decode_image(data, source="x", fit_pixels=MAX_PIXELS)
    fit_h, fit_w = smart_resize(3000, 2000)
    assert image.size == (fit_w, fit_h)
    assert original_size(image) == (2000, 3000)
    # As the full-size decode shows it: red on top after the turn.
    assert close_to(image.getpixel((10, 10)), RED)
    assert close_to(image.getpixel((10, fit_h - 10)), BLUE)
    full = resize_for_model(decode_image(data, source="x"))
    assert full.size == image.size


def test_an_image_the_model_takes_whole_is_not_resized():
    data = encoded(two_colour(1000, 800))
    image = decode_image(data, source="x", fit_pixels=MAX_PIXELS)
    assert image.size == original_size(image) == (1000, 800)


def test_a_local_file_larger_than_the_download_limit_is_not_read(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(encoded(two_colour(40, 20)) + b"\0" * 5000)
    loader = ImageLoader(max_download_bytes=4096)
    with pytest.raises(ImageTooLarge, match=r"huge.png is \d+ bytes, more than 4096"):
        loader.load(str(path), local_paths=True)


def test_a_local_file_is_read_no_further_than_the_cap(tmp_path):
    """A file that grows after its size was taken (a pipe, a log) is cut off."""
    path = tmp_path / "growing.bin"
    path.write_bytes(b"x" * 10)
    with path.open("rb") as handle:
        path.write_bytes(b"x" * 100)
        with pytest.raises(ImageTooLarge, match="more than 50"):
            read_capped(handle, 50, str(path))
    with path.open("rb") as handle:
        assert read_capped(handle, 100, str(path)) == b"x" * 100


def test_a_jpeg_whose_dct_scaling_lands_on_the_model_size_keeps_its_size():
    """2800 x 2800 drafts by 2 to exactly the model's 1400 x 1400: no resize is
    left to do, and the full size must still be known."""
    data = encoded(two_colour(2800, 2800), "JPEG")
    image = decode_image(data, source="x", fit_pixels=MAX_PIXELS)
    assert image.size == (1400, 1400)
    assert original_size(image) == (2800, 2800)


@pytest.mark.parametrize("value", ["12", "ab", "(5, 5)"])
@pytest.mark.parametrize("fit", [None, 2_007_040], ids=["whole", "fit"])
def test_a_png_text_chunk_cannot_set_the_original_size(value, fit):
    """Pillow copies PNG text chunks into ``info``: one named like our key made
    every region scale to 1x2 px, or failed the whole chunk."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("rexlabel.original_size", value)
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480)).save(buffer, "PNG", pnginfo=info)
    image = decode_image(buffer.getvalue(), source="x", fit_pixels=fit)
    assert original_size(image) == (640, 480)


# Decoding for tiled inference -----------------------------------------------------


def test_a_fit_rule_gets_the_stored_size_and_may_keep_every_pixel():
    asked = []

    def keep_all(width, height):
        asked.append((width, height))
        return width * height

    data = encoded(two_colour(3000, 2000), "PNG")
    image = decode_image(data, source="x", fit_pixels=keep_all)
    assert asked == [(3000, 2000)]
    assert image.size == original_size(image) == (3000, 2000)


def test_a_fit_rule_may_ask_for_a_size_between_the_model_and_the_image():
    data = encoded(two_colour(3000, 2000), "PNG")
    image = decode_image(data, source="x", fit_pixels=lambda w, h: 1_500_000)
    fit_h, fit_w = smart_resize(2000, 3000, max_pixels=1_500_000)
    assert image.size == (fit_w, fit_h)
    assert original_size(image) == (3000, 2000)


def test_a_tiled_jpeg_above_the_limit_is_decoded_at_the_dct_scale_within_it(
    monkeypatch,
):
    data = encoded(two_colour(4000, 3000), "JPEG", quality=90)
    sizes = _record_decoded_sizes(monkeypatch)
    # The tiles want every pixel (12 MP); the limit is 5 MP: half a side it is.
    image = decode_image(
        data, source="big.jpg", max_pixels=5_000_000, fit_pixels=lambda w, h: w * h
    )
    assert set(sizes) == {(2000, 1500)}
    assert image.size == (2000, 1500)
    assert original_size(image) == (4000, 3000)
    assert close_to(image.getpixel((10, 10)), RED)


def test_a_tiled_png_above_the_limit_is_refused_as_an_untiled_one():
    data = png_with_size(4000, 3000)
    with pytest.raises(ImageTooLarge, match="4000x3000"):
        decode_image(
            data, source="x", max_pixels=5_000_000, fit_pixels=lambda w, h: w * h
        )
