"""Metric-learning losses on L2-normalised embeddings, with online mining inside a P x K batch.

Both take ``embeddings`` (B, D) that are already unit-norm and integer ``labels`` (B,), and return
``(loss, active_share)``: a scalar loss and the share of terms (triplets or pairs) that contribute a non-zero
loss, the usual "share of active triplets" progress figure.
"""

from __future__ import annotations

from typing import Any


def pairwise_squared_distances(embeddings: Any) -> Any:
    """(B, B) squared L2 distances, clipped at 0 (for unit vectors: 2 - 2 cos)."""
    import tensorflow as tf

    dot = tf.matmul(embeddings, embeddings, transpose_b=True)
    sq = tf.linalg.diag_part(dot)
    return tf.maximum(sq[:, None] - 2.0 * dot + sq[None, :], 0.0)


def semihard_triplet_loss(embeddings: Any, labels: Any, margin: float = 0.2) -> tuple[Any, Any]:
    """FaceNet's triplet loss with batch semi-hard negative mining, on squared L2 distances.

    For every anchor-positive pair (a, p) of the batch, the negative is the closest one that is still farther
    than p (``d_an > d_ap``, semi-hard); if there is none, the farthest negative. The loss is the mean over all
    anchor-positive pairs of ``max(d_ap - d_an + margin, 0)``.
    """
    import tensorflow as tf

    d = pairwise_squared_distances(embeddings)
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    eye = tf.eye(tf.shape(labels)[0], dtype=tf.bool)
    positive = tf.logical_and(same, tf.logical_not(eye))
    negative = tf.logical_not(same)
    big = tf.constant(1e9, d.dtype)
    # For anchor a and positive p: d_an for every n, as (a, p, n).
    d_ap = d[:, :, None]
    d_an = d[:, None, :]
    neg = negative[:, None, :]
    semihard = tf.logical_and(neg, d_an > d_ap)
    closest_semihard = tf.reduce_min(tf.where(semihard, d_an, big), axis=2)
    farthest = tf.reduce_max(tf.where(neg, d_an, -big), axis=2)
    has_semihard = tf.reduce_any(semihard, axis=2)
    chosen = tf.where(has_semihard, closest_semihard, farthest)
    losses = tf.maximum(d - chosen + margin, 0.0)
    mask = tf.cast(positive, d.dtype) * tf.cast(tf.reduce_any(negative, axis=1), d.dtype)[:, None]
    count = tf.maximum(tf.reduce_sum(mask), 1.0)
    loss = tf.reduce_sum(losses * mask) / count
    active = tf.reduce_sum(tf.cast(losses > 0.0, d.dtype) * mask) / count
    return loss, active


def contrastive_loss(embeddings: Any, labels: Any, margin: float = 1.1) -> tuple[Any, Any]:
    """The Siamese (Hadsell et al.) contrastive loss over all pairs of the batch, on L2 distances:
    ``d^2`` for a same-person pair, ``max(margin - d, 0)^2`` for a different-person pair; the two kinds are
    averaged separately and summed, so the many negative pairs do not drown the few positive ones."""
    import tensorflow as tf

    d2 = pairwise_squared_distances(embeddings)
    dist = tf.sqrt(d2 + 1e-12)
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    eye = tf.eye(tf.shape(labels)[0], dtype=tf.bool)
    pos = tf.cast(tf.logical_and(same, tf.logical_not(eye)), d2.dtype)
    neg = tf.cast(tf.logical_not(same), d2.dtype)
    neg_terms = tf.square(tf.maximum(margin - dist, 0.0))
    n_pos, n_neg = tf.maximum(tf.reduce_sum(pos), 1.0), tf.maximum(tf.reduce_sum(neg), 1.0)
    loss = tf.reduce_sum(d2 * pos) / n_pos + tf.reduce_sum(neg_terms * neg) / n_neg
    active_neg = tf.reduce_sum(tf.cast(neg_terms > 0.0, d2.dtype) * neg)
    active = (tf.reduce_sum(pos) + active_neg) / (n_pos + n_neg)
    return loss, active


LOSSES = {"triplet": semihard_triplet_loss, "contrastive": contrastive_loss}
DEFAULT_MARGINS = {"triplet": 0.2, "contrastive": 1.1}
"""Triplet: FaceNet's 0.2 on squared distances. Contrastive: a distance margin just above the pretrained
model's LFW threshold (1.075), so different people are pushed past the decision boundary."""
