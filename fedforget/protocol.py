"""Names of the messages and record keys that the server and clients exchange.

Plain strings (no Flower import), shared by ``fedforget.strategies`` and ``fedforget.clients``
so the two sides cannot drift apart. Message types follow Flower's ``<category>.<action>``.
"""

TRAIN = "train"
RELAY_TRAIN = "train.relay"
LOCAL_TRAIN = "train.local"
LOCAL_UNLEARN = "train.unlearn"
TRAIN_GAN = "train.gan"
FORGET_DATA = "query.forget_data"
RETAIN_DATA = "query.retain_data"
DELETION_COMPLETE = "query.deletion_complete"
DELETION_STATUS = "query.deletion_status"
LOCAL_EVAL = "query.local_eval"
VERIFY = "query.verify"
FORGET_EVAL = "query.forget_eval"

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
DATA = "data"
DELETION = "deletion"
GAN = "gan"

RUN_CONFIG_KEY = "fedforget-config"
SERVER_ROUND = "server-round"
EPOCHS = "local-epochs"
LEARNING_RATE = "lr"
PROXIMAL_MU = "proximal-mu"
MAX_SAMPLES = "max-samples"
SEED = "seed"
NUM_CLASSES = "num-classes"
BRANCH = "branch"
RETAIN_SAMPLES = "retain-samples"
VERIFY_DIR = "verify-dir"
REPORT = "report"
REQUESTS = "requests"
CLASSES = "classes"
MODE = "mode"
INITIAL_ARRAYS = "initial-arrays"
TRAINING_NEEDS = "training-needs"
"""JSON ``{need: owning method}`` of the needs the clients work for while they train."""
SHARED_MODEL = "shared-model"
"""1: the trained model serves several ``compare`` branches (hooks must leave it as it is)."""
ATTACH_FORGET = "attach-forget"
DROP_ORDER = "drop-order"
"""A ConfigRecord riding on any message to a deleting node: the order to drop D_f (the config
``query.deletion_complete`` would carry), carried out before the message is handled."""
ORDER_DONE = "order-done"
"""Reply metric: the node carried out the drop order it received (samples dropped)."""

NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"
DELETION_PENDING = "deletion-pending"
NUM_FORGET = "num-forget"
DELETED_PASSES = "deleted-sample-passes"
DELETION_DONE = "deletion-done"
COMPUTE_SECONDS = "compute-seconds"
GAN_SECONDS = "gan-compute-seconds"
GAN_LOSS = "gan-generator-loss"
HOOK_SECONDS = "hook-seconds"
"""Prefix of a training reply's metric ``hook-seconds:<need>``: a method's hook's compute."""
TRAIN_LOSS = "train-loss"
ACCURACY = "accuracy"
NODE_PHASES = ("before_deletion", "after_unlearning", "after_recovery", "final")
"""The models a ``query.forget_eval`` may carry, one ArrayRecord each, named by phase."""


def extra_model(index: int, key: str = ARRAYS) -> str:
    """The key of the ``index``-th extra model of a ``query.local_eval`` (``key`` = ARRAYS),
    or of its result (``key`` = ACCURACY): ``"<key>:<index>"``."""
    return f"{key}:{index}"
