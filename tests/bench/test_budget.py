"""bench --budget's record of what a person opens after each arm: the figures' pixels, read from the
PNG files themselves, and the report's size in bytes."""

from PIL import Image

from app.bench.budget import outputs


def test_outputs_are_the_pixel_sizes_of_the_figures_and_the_report_bytes(tmp_path):
    (tmp_path / "figures").mkdir()
    Image.new("RGB", (640, 480)).save(tmp_path / "figures" / "01_a.png")
    Image.new("RGB", (30, 2000)).save(tmp_path / "figures" / "02_b.png")
    (tmp_path / "report.html").write_bytes(b"x" * 1234)
    assert outputs(tmp_path) == {"figures_px": {"01_a.png": [640, 480], "02_b.png": [30, 2000]}, "report_bytes": 1234}
    (tmp_path / "report.html").unlink()
    assert outputs(tmp_path)["report_bytes"] is None
