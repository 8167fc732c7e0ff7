"""Conditional GANs in the federation: the network, its local training, and GAN unlearning."""

from fedforget.gan.cascaded import CascadedSettings, CascadedUnlearner, substitute_images
from fedforget.gan.inversion import InversionResult, InversionSettings, invert
from fedforget.gan.metrics import (
    GanEvaluation,
    classifier_frechet_distance,
    discriminator_auc,
    downstream_accuracy,
    evaluate_gan,
    frechet_distance,
    judge_recognition,
    reference_classifier,
)
from fedforget.gan.networks import (
    ConditionalGan,
    ProjectionDiscriminator,
    build_conditional_gan,
)
from fedforget.gan.training import GanTrainResult, sample_images, train_gan
from fedforget.gan.unlearner import (
    GAN_UNLEARNER_REGISTRY,
    GanUnlearner,
    GanUnlearnerSettings,
    GanUnlearningRequest,
    GanUnlearningResult,
    UnknownGanUnlearnerError,
    build_gan_unlearner,
    gan_unlearner_names,
    register_gan_unlearner,
)

__all__ = [
    "GAN_UNLEARNER_REGISTRY",
    "CascadedSettings",
    "CascadedUnlearner",
    "ConditionalGan",
    "GanEvaluation",
    "GanTrainResult",
    "GanUnlearner",
    "GanUnlearnerSettings",
    "GanUnlearningRequest",
    "GanUnlearningResult",
    "InversionResult",
    "InversionSettings",
    "ProjectionDiscriminator",
    "UnknownGanUnlearnerError",
    "build_conditional_gan",
    "build_gan_unlearner",
    "classifier_frechet_distance",
    "discriminator_auc",
    "downstream_accuracy",
    "evaluate_gan",
    "frechet_distance",
    "gan_unlearner_names",
    "invert",
    "judge_recognition",
    "reference_classifier",
    "register_gan_unlearner",
    "sample_images",
    "substitute_images",
    "train_gan",
]
