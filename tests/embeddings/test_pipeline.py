"""The real pipeline (MTCNN + FaceNet weights) on the 5-celebrity set shipped with the weights."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddings import (
    CROP_SIZE,
    FaceAnalyzer,
    InvalidImage,
    MultipleFaces,
    NoFace,
    pairwise_distances,
)
from tests.conftest import image_files

pytestmark = pytest.mark.slow  # the real weights


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _embed_split(analyzer: FaceAnalyzer, root: Path) -> tuple[np.ndarray, list[str], int]:
    embs, labels, misses = [], [], 0
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in image_files(person):
            faces = analyzer.analyze(f.read_bytes())
            if not faces:
                misses += 1
                continue
            embs.append(faces[0].embedding)
            labels.append(person.name)
    return np.stack(embs), labels, misses


def test_nearest_neighbour_names_every_validation_photo(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    train, train_labels, train_misses = _embed_split(analyzer, celebrity_root / "train")
    val, val_labels, val_misses = _embed_split(analyzer, celebrity_root / "val")
    assert val_misses == 0, "every validation photo must give a face"
    assert len(val_labels) == 25 and train_misses <= 2
    nearest = pairwise_distances(val, train).argmin(axis=1)
    predicted = [train_labels[i] for i in nearest]
    wrong = [(v, p) for v, p in zip(val_labels, predicted, strict=True) if v != p]
    assert wrong == [], f"1-NN mistakes: {wrong}"


def test_embeddings_are_unit_float32(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    photo = image_files(celebrity_root / "val" / "madonna")[0]
    faces = analyzer.analyze(photo.read_bytes())
    assert len(faces) >= 1
    emb = faces[0].embedding
    assert emb.dtype == np.float32 and emb.shape == (128,)
    assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-4
    assert faces[0].crop.shape == (CROP_SIZE, CROP_SIZE, 3) and faces[0].crop.dtype == np.uint8
    box = faces[0].box
    h, w = analyzer.load_image(photo.read_bytes()).shape[:2]
    assert 0 <= box.x < w and 0 <= box.y < h and box.width > 20 and box.height > 20


def test_batched_encoding_matches_one_by_one(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    crops = [analyzer.analyze(f.read_bytes())[0].crop for f in image_files(celebrity_root / "val" / "ben_afflek")[:3]]
    together = analyzer.encode(np.stack(crops))
    alone = np.stack([analyzer.encode(c[None])[0] for c in crops])
    assert np.abs(together - alone).max() < 1e-4


def test_exif_rotated_photo_finds_the_same_face(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    photo = image_files(celebrity_root / "val" / "jerry_seinfeld")[0]
    upright = Image.open(photo).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": undoes ROTATE_90
    reference = analyzer.analyze(_jpeg(upright))[0]
    rotated = analyzer.analyze(_jpeg(stored, exif=exif.tobytes()))
    assert rotated, "the face must be found in the EXIF-rotated photo"
    assert rotated[0].box.iou(reference.box) > 0.85
    assert float(np.linalg.norm(rotated[0].embedding - reference.embedding)) < 0.3


def test_no_face_gives_empty_list_and_single_face_raises(analyzer: FaceAnalyzer) -> None:
    blank = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (150, 1, 3))
    assert analyzer.analyze(blank) == []
    with pytest.raises(NoFace):
        analyzer.single_face(_jpeg(Image.fromarray(blank)))


def test_one_pixel_image_has_no_face(analyzer: FaceAnalyzer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    assert analyzer.analyze(buf.getvalue()) == []


def test_aligned_face_skips_detection_and_equals_the_detected_face(
    analyzer: FaceAnalyzer, celebrity_root: Path
) -> None:
    photo = image_files(celebrity_root / "val" / "madonna")[0].read_bytes()
    face = analyzer.single_face(photo, check_quality=False)
    aligned = analyzer.aligned_face(face.crop)
    assert aligned.aligned_input and not face.aligned_input
    assert np.array_equal(aligned.crop, face.crop)
    assert float(np.linalg.norm(aligned.embedding - face.embedding)) < 1e-3
    assert aligned.box.width == aligned.box.height == CROP_SIZE and np.isnan(aligned.detection.confidence)
    assert aligned.quality.face_size == pytest.approx(CROP_SIZE / (1 + analyzer.config.margin))
    # any size: a 2x larger copy is area-resized back to (nearly) the same crop and embedding
    big = np.asarray(Image.fromarray(face.crop).resize((320, 320), Image.Resampling.BICUBIC))
    assert float(np.linalg.norm(analyzer.aligned_face(big).embedding - face.embedding)) < 0.1
    for bad in (np.zeros((1, 1, 3), np.uint8), np.zeros((19, 60, 3), np.uint8), np.zeros((50, 120, 3), np.uint8)):
        with pytest.raises(InvalidImage, match="aligned face crop"):
            analyzer.aligned_face(bad)


def test_two_people_side_by_side(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    a = Image.open(image_files(celebrity_root / "val" / "ben_afflek")[0]).convert("RGB")
    b = Image.open(image_files(celebrity_root / "val" / "madonna")[0]).convert("RGB")
    h = 300
    a = a.resize((int(a.width * h / a.height), h))
    b = b.resize((int(b.width * h / b.height), h))
    both = Image.new("RGB", (a.width + b.width, h))
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    data = _jpeg(both)
    faces = analyzer.analyze(data)
    assert len(faces) == 2
    with pytest.raises(MultipleFaces):
        analyzer.single_face(data)
    largest = analyzer.single_face(data, largest=True, check_quality=False)
    assert largest.box.area == max(f.box.area for f in faces)


def test_verify_same_and_different_people(analyzer: FaceAnalyzer, celebrity_root: Path) -> None:
    elton = image_files(celebrity_root / "val" / "elton_john")
    mindy = image_files(celebrity_root / "val" / "mindy_kaling")
    same = analyzer.verify(elton[1].read_bytes(), elton[2].read_bytes())
    different = analyzer.verify(elton[1].read_bytes(), mindy[0].read_bytes())
    assert same.match and not different.match
    assert 0.0 <= same.distance < different.distance <= 2.0
    assert same.similarity == pytest.approx(1 - same.distance**2 / 2, abs=1e-5)
    assert same.threshold == analyzer.threshold


def test_large_photo_is_detected_on_a_downscaled_copy_in_source_pixels(
    analyzer: FaceAnalyzer, celebrity_root: Path
) -> None:
    photo = Image.open(image_files(celebrity_root / "val" / "madonna")[0]).convert("RGB")
    factor = 3000 / max(photo.size)  # well above the detector's max side
    big = photo.resize((round(photo.width * factor), round(photo.height * factor)), Image.Resampling.BICUBIC)
    assert max(big.size) > analyzer.detector.max_side
    small_face = analyzer.analyze(np.asarray(photo))[0]
    big_face = analyzer.analyze(np.asarray(big))[0]
    expected = type(small_face.box)(
        small_face.box.x * factor, small_face.box.y * factor, small_face.box.width * factor,
        small_face.box.height * factor,
    )  # fmt: skip
    assert big_face.box.iou(expected) > 0.85
    assert float(np.linalg.norm(big_face.embedding - small_face.embedding)) < 0.35
