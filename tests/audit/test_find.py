"""find.same_picture: a feature pair is a copy only when the two files are one picture (perceptual
hashes a few bits apart), on real Imagenette images: a resized, re-encoded copy is kept; two different
parachute photos that the 8-minute audit bench's pooled features called near copies
(benchmarks/runs/audit-leakage-phash.json) are not."""

from PIL import Image

from app.audit.find import same_picture

from ..conftest import SHARED, need_shared

PARACHUTES = ("val/n03888257/n03888257_31742.JPEG", "train/n03888257/n03888257_24025.JPEG")


def test_a_resized_reencoded_copy_is_a_copy_and_another_photo_of_the_scene_is_not(tmp_path):
    need_shared()
    original = SHARED / "train" / "n03888257" / "n03888257_24025.JPEG"
    with Image.open(original) as im:
        im.convert("RGB").resize((int(im.width * 0.7), int(im.height * 0.7)), Image.BICUBIC).save(
            tmp_path / "copy.jpg", quality=65)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a picture")
    paths = [str(original), str(tmp_path / "copy.jpg"), *(str(SHARED / p) for p in PARACHUTES),
             str(tmp_path / "broken.jpg")]
    copies, alike = same_picture([(0, 1, 0.99), (2, 3, 0.98), (0, 4, 0.97)], paths)
    assert copies == [(0, 1, 0.99)]
    assert alike == [(2, 3, 0.98), (0, 4, 0.97)]  # another photo; an unreadable file
