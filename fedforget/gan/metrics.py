"""Evaluation of a (possibly unlearned) conditional GAN: paper 001, section 5.2.

* **Unlearning effectiveness, item**: :func:`discriminator_auc`, the AUC of D's scores with the
  remaining (learning) images as positives and the unlearned images as negatives. 0.5 before
  unlearning (D scores training images alike); paper 001's destination is >= 0.8 for items.
* **Unlearning effectiveness, class**: :func:`classifier_frechet_distance` between the GAN's
  drawings of the forgotten class and real images of it (``fd_forgotten``; high = forgotten),
  and the judge's recognition of the forgotten class (Skyeye's measure, low = forgotten).
* **Intrinsic performance**: the same distance for the remaining classes (``fd_remaining``;
  low = intact) and the judge's recognition of each remaining class.
* **Downstream task**: :func:`downstream_accuracy`, an offline classifier's accuracy on drawings
  of the remaining classes, the conditioning label taken as the truth.

**This is not Inception-FID.** Paper 001 uses the Frechet Inception Distance; fedforget is
offline and its images are 28x28 grey digits, so the features are the **penultimate layer of an
offline classifier** (:meth:`fedforget.models.ClassifierModel.embed`, 84-d for LeNet-5) trained
centrally on the dataset's training split by :func:`reference_classifier`. The Frechet formula
is the same, the numbers are not comparable to published FIDs (nor across feature extractors).
The same classifier is the judge and the downstream classifier.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fedforget.data.sources import ArrayDataset
from fedforget.gan.networks import ConditionalGan
from fedforget.gan.training import sample_images
from fedforget.models import ClassifierModel, build_model
from fedforget.training import EVAL_BATCH, predict_proba, train_local
from fedforget.verification.skyeye import recognition_rates

__all__ = [
    "GanEvaluation",
    "classifier_features",
    "classifier_frechet_distance",
    "discriminator_auc",
    "discriminator_scores",
    "downstream_accuracy",
    "evaluate_gan",
    "frechet_distance",
    "judge_recognition",
    "reference_classifier",
]

REFERENCE_LR = 0.05
REFERENCE_MOMENTUM = 0.9
REFERENCE_BATCH = 64


@torch.no_grad()
def discriminator_scores(
    gan: ConditionalGan, data: ArrayDataset, device: torch.device | None = None
) -> np.ndarray:
    """``D(x, y)`` as probabilities ``(N,)`` (the sigmoid of the logit), no gradients."""
    device = device or torch.device("cpu")
    was_training = gan.training
    gan.to(device).eval()
    parts = []
    for start in range(0, len(data), EVAL_BATCH):
        x = torch.from_numpy(data.x[start : start + EVAL_BATCH]).to(device)
        y = torch.from_numpy(data.y[start : start + EVAL_BATCH]).to(device)
        parts.append(gan.score(x, y).cpu())
    gan.train(was_training)
    return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=np.float32)


def discriminator_auc(
    gan: ConditionalGan,
    learning: ArrayDataset,
    unlearning: ArrayDataset,
    device: torch.device | None = None,
) -> float:
    """AUC of D's scores, remaining images positive, unlearned images negative (section 5.2).

    Parameters
    ----------
    gan : ConditionalGan
        The GAN whose discriminator is scored (each image with its own label).
    learning : ArrayDataset
        Remaining (learning) images: the positives.
    unlearning : ArrayDataset
        Unlearned images: the negatives.
    device : torch.device, optional
        Where to compute.

    Returns
    -------
    float
        ``P(D(x_l) > D(x_u))``; 0.5 when D cannot tell them apart, 1 when every unlearned
        image scores below every remaining one.
    """
    if len(learning) == 0 or len(unlearning) == 0:
        raise ValueError("discriminator_auc needs learning and unlearning images")
    pos = discriminator_scores(gan, learning, device)
    neg = discriminator_scores(gan, unlearning, device)
    truth = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    from sklearn.metrics import roc_auc_score  # here: a ClientApp process never needs it

    return float(roc_auc_score(truth, np.concatenate([pos, neg])))


@torch.no_grad()
def classifier_features(
    classifier: ClassifierModel, images: np.ndarray, device: torch.device | None = None
) -> np.ndarray:
    """Penultimate features ``classifier.embed(x)`` as float64 ``(N, D)``."""
    device = device or torch.device("cpu")
    was_training = classifier.training
    classifier.to(device).eval()
    parts = [
        classifier.embed(torch.from_numpy(images[i : i + EVAL_BATCH]).to(device)).cpu()
        for i in range(0, len(images), EVAL_BATCH)
    ]
    classifier.train(was_training)
    return torch.cat(parts).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets ``a`` and ``b`` ``(N, D)``.

    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; the imaginary residue of the
    matrix square root is dropped and a tiny ridge keeps singular covariances finite.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance needs at least two samples per set")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    from scipy import linalg  # here: a ClientApp process never needs it

    with warnings.catch_warnings():
        # ReLU features have dead units, so covariances are often singular; the ridge below
        # handles the rare non-finite root, a merely inaccurate one is harmless here.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():
            ridge = 1e-6 * np.eye(len(cov_a))
            root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    trace = np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(np.real(root))
    return float(max(np.sum((mu_a - mu_b) ** 2) + trace, 0.0))


def classifier_frechet_distance(
    classifier: ClassifierModel,
    images_a: np.ndarray,
    images_b: np.ndarray,
    device: torch.device | None = None,
) -> float:
    """Frechet distance in ``classifier.embed``'s feature space. **Not Inception-FID.**

    See the module docstring: the features are an offline classifier's penultimate layer, so
    the values are only comparable with the same classifier.
    """
    return frechet_distance(
        classifier_features(classifier, images_a, device),
        classifier_features(classifier, images_b, device),
    )


def _draw(
    gan: ConditionalGan, classes: Sequence[int], per_class: int, seed: int, device
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` drawings of each class, with their labels."""
    labels = np.repeat(np.asarray(classes, dtype=np.int64), per_class)
    return sample_images(gan, labels, seed=seed, device=device), labels


def judge_recognition(
    gan: ConditionalGan,
    judge: nn.Module,
    samples_per_class: int = 200,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[int, float]:
    """Per class, the share of G's drawings the judge labels as their conditioning class.

    Skyeye's measure (:func:`fedforget.verification.skyeye.recognition_rates`) applied to the
    GAN under evaluation.
    """
    images, _ = _draw(gan, range(gan.num_classes), samples_per_class, seed, device)
    predictions = predict_proba(judge, images, device).argmax(axis=1)
    return recognition_rates(predictions.reshape(gan.num_classes, samples_per_class))


def downstream_accuracy(
    gan: ConditionalGan,
    classifier: nn.Module,
    classes: Sequence[int],
    samples_per_class: int = 200,
    seed: int = 0,
    device: torch.device | None = None,
) -> float:
    """Accuracy of ``classifier`` on drawings of ``classes``, the conditioning label as truth."""
    if len(classes) == 0:
        raise ValueError("downstream_accuracy needs at least one class")
    images, labels = _draw(gan, classes, samples_per_class, seed, device)
    return float((predict_proba(classifier, images, device).argmax(axis=1) == labels).mean())


def reference_classifier(
    train: ArrayDataset,
    num_classes: int,
    seed: int = 0,
    epochs: int = 2,
    cache_path: Path | str | None = None,
    device: torch.device | None = None,
) -> ClassifierModel:
    """A LeNet-5 trained centrally on ``train``: the judge and feature extractor of the metrics.

    SGD, lr 0.05, momentum 0.9, batch 64, seeded. With ``cache_path`` the weights are loaded
    from it when it exists (``torch.load(..., weights_only=True)``), else trained and saved.
    On MNIST, 2 epochs take about 40 s on one CPU thread and give ~98.8 % test accuracy.
    """
    channels, size = int(train.x.shape[1]), int(train.x.shape[2])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("lenet5", num_classes, channels, size)
    path = Path(cache_path) if cache_path is not None else None
    if path is not None and path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    train_local(
        model,
        train,
        epochs=epochs,
        lr=REFERENCE_LR,
        batch_size=REFERENCE_BATCH,
        seed=seed,
        momentum=REFERENCE_MOMENTUM,
        device=device,
    )
    model.cpu().eval()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model


class GanEvaluation(BaseModel):
    """All metrics of one GAN (one row of ``fedforget compare --task gan``'s table).

    Attributes
    ----------
    fd_forgotten : float or None
        Classifier-feature Frechet distance (not Inception-FID) between drawings of the
        forgotten classes and real images of them; high = forgotten. ``None`` without
        forgotten classes.
    fd_remaining : float
        The same for the remaining classes; low = intact.
    downstream_accuracy : float
        The classifier's accuracy on drawings of the remaining classes.
    recognition : dict of int to float
        The judge's recognition per class.
    forgotten_recognition : float or None
        Mean recognition of the forgotten classes.
    remaining_recognition : float
        Mean recognition of the remaining classes.
    auc : float or None
        :func:`discriminator_auc` when learning and unlearning images were given.
    """

    model_config = ConfigDict(extra="forbid")

    fd_forgotten: float | None
    fd_remaining: float
    downstream_accuracy: float
    recognition: dict[int, float]
    forgotten_recognition: float | None
    remaining_recognition: float
    auc: float | None = None


def evaluate_gan(
    gan: ConditionalGan,
    classifier: ClassifierModel,
    real: ArrayDataset,
    *,
    forgotten_classes: Sequence[int] = (),
    learning: ArrayDataset | None = None,
    unlearning: ArrayDataset | None = None,
    samples_per_class: int = 200,
    seed: int = 0,
    device: torch.device | None = None,
) -> GanEvaluation:
    """Every metric of the module docstring for one GAN.

    Parameters
    ----------
    gan : ConditionalGan
        The GAN to evaluate (unchanged).
    classifier : ClassifierModel
        Offline classifier: judge, downstream classifier and feature extractor (see
        :func:`reference_classifier`).
    real : ArrayDataset
        Real labelled images to compare with (e.g. the test split).
    forgotten_classes : sequence of int
        Classes unlearned (class unlearning); empty for item unlearning.
    learning, unlearning : ArrayDataset, optional
        Both given: the discriminator AUC is computed too.
    samples_per_class : int
        Drawings per class for recognition, accuracy and the distances.
    seed : int
        Seed of the drawings.
    device : torch.device, optional
        Where to compute.

    Returns
    -------
    GanEvaluation
    """
    forgotten = sorted({int(c) for c in forgotten_classes})
    remaining = [c for c in range(gan.num_classes) if c not in forgotten]
    recognition = judge_recognition(gan, classifier, samples_per_class, seed, device)
    fd_forgotten = None
    if forgotten:
        fake, _ = _draw(gan, forgotten, samples_per_class, seed, device)
        fd_forgotten = classifier_frechet_distance(
            classifier, fake, real.x[np.isin(real.y, forgotten)], device
        )
    fake, _ = _draw(gan, remaining, samples_per_class, seed, device)
    fd_remaining = classifier_frechet_distance(
        classifier, fake, real.x[np.isin(real.y, remaining)], device
    )
    auc = None
    if learning is not None and unlearning is not None:
        auc = discriminator_auc(gan, learning, unlearning, device)
    return GanEvaluation(
        fd_forgotten=fd_forgotten,
        fd_remaining=fd_remaining,
        downstream_accuracy=downstream_accuracy(
            gan, classifier, remaining, samples_per_class, seed, device
        ),
        recognition=recognition,
        forgotten_recognition=(
            float(np.mean([recognition[c] for c in forgotten])) if forgotten else None
        ),
        remaining_recognition=float(np.mean([recognition[c] for c in remaining])),
        auc=auc,
    )
