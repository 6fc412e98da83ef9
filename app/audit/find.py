"""What is wrong in a dataset, found by the libraries made for it: cleanlab's confident learning
(`find_label_issues`, label-quality scores) on out-of-sample probabilities, near duplicates from the
model body's pooled features (cosine nearest neighbours, cleanlab Datalab's threshold rule) confirmed
by perceptual hashes, and
cleanvision's image checks.
Pure functions of arrays and file lists: no model here."""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np

# cleanlab's most conservative confident-learning rule: flagged by both prune_by_class and prune_by_noise_rate.
# With weak fold models (57 % out of sample) every rule found ~86 % of 100 planted wrong labels but
# flagged 4-6 x as many; `both` flagged the fewest of the confident-learning rules (504 against the
# default's 550; benchmarks/runs/audit-filter-probe.json).
FILTER_BY = "both"
QUALITY_CHECKS = ("blurry", "dark", "low_information", "odd_aspect_ratio")  # cleanvision's names


def label_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str = FILTER_BY) -> tuple[np.ndarray, np.ndarray]:
    """(indices flagged, worst first; every example's label quality): cleanlab's find_label_issues
    and get_label_quality_scores (self-confidence: the probability of the given label)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, probs = np.asarray(labels), np.asarray(probs, np.float64)
    probs = probs / probs.sum(1, keepdims=True)
    quality = get_label_quality_scores(labels, probs)
    with _quiet():
        flagged = find_label_issues(labels, probs, filter_by=filter_by, n_jobs=1)
    idx = np.flatnonzero(flagged)
    return idx[np.argsort(quality[idx], kind="stable")], quality


def suggested(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each example, the likeliest class other than its given one."""
    p = np.array(probs, np.float64, copy=True)
    p[np.arange(len(labels)), labels] = -1
    return p.argmax(1)


NEAR_DUPLICATE = 0.13  # cleanlab Datalab's rule: cosine distance below this x the median nearest-neighbour distance


def near_duplicates(features: np.ndarray, k: int = 10) -> list[tuple[int, int, float]]:
    """[(i, j, cosine similarity)], i < j, most similar first: every pair of images whose features lie
    closer than NEAR_DUPLICATE x the median distance of an image to its nearest neighbour, among each
    image's k nearest (scikit-learn's NearestNeighbors, cosine). The rule is the one cleanlab's Datalab
    applies; Datalab itself needs Hugging Face `datasets`, which this app does not install for it."""
    from sklearn.neighbors import NearestNeighbors

    f = np.asarray(features, np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    k = min(k, len(f) - 1)
    if k < 1:
        return []
    dist, nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(f).kneighbors(f)
    dist, nn = dist[:, 1:], nn[:, 1:]  # each image's own row first
    radius = NEAR_DUPLICATE * max(float(np.median(dist[:, 0])), 1e-12)
    rows, cols = np.nonzero(dist < radius)
    pairs = {tuple(sorted((int(i), int(nn[i, c])))) for i, c in zip(rows, cols)}
    return sorted(((i, j, float(f[i] @ f[j])) for i, j in pairs), key=lambda t: -t[2])


PHASH_MAX_BITS = 8  # of 64: a near copy's perceptual hashes differ in at most this many bits


def same_picture(pairs: list, paths: list[str], max_bits: int = PHASH_MAX_BITS) -> tuple[list, list]:
    """(copies, look-alikes) of the feature pairs: a pair is a copy when its two files' perceptual
    hashes (imagehash's 64-bit phash, the hash cleanvision's near-duplicate check uses) also differ in
    at most `max_bits` bits. Why: pooled features put different photos of one tight scene (parachutes
    on a blue sky) as close as a resized copy; a resize or re-encode moves the hash by a few bits, a
    different photo by about half of them. A file that cannot be read counts as a look-alike."""
    import imagehash
    from PIL import Image

    hashes: dict[int, object] = {}

    def phash(i: int):
        if i not in hashes:
            try:
                with Image.open(paths[i]) as im:
                    hashes[i] = imagehash.phash(im.convert("RGB"), hash_size=8)
            except (OSError, ValueError):
                hashes[i] = None
        return hashes[i]

    copies, alike = [], []
    for pair in pairs:
        a, b = phash(pair[0]), phash(pair[1])
        (copies if a is not None and b is not None and a - b <= max_bits else alike).append(pair)
    return copies, alike


def low_quality(paths: list[str], workers: int | None = None) -> list[tuple[int, str, float]]:
    """[(index into paths, check, score)] for each image cleanvision flags (blurry, dark, near-blank
    i.e. low_information, odd aspect ratio); lower scores are worse."""
    from cleanvision import Imagelab

    if not paths:
        return []
    lab = Imagelab(filepaths=list(paths))
    with _quiet():
        lab.find_issues({c: {} for c in QUALITY_CHECKS}, n_jobs=workers or os.cpu_count() or 1, verbose=False)
    df, index = lab.issues, {p: i for i, p in enumerate(paths)}
    out = []
    for check in QUALITY_CHECKS:
        hit = df[df[f"is_{check}_issue"]]
        out += [(index[str(p)], check, float(s)) for p, s in zip(hit.index, hit[f"{check}_score"]) if str(p) in index]
    return sorted(out, key=lambda t: t[2])


@contextlib.contextmanager
def _quiet():
    """cleanlab and cleanvision print progress and notes of their own: the audit says what it does."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
