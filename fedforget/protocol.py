"""Names of the messages and record keys that the server and clients exchange.

Plain strings (no Flower import), shared by ``fedforget.strategies`` and ``fedforget.clients``
so the two sides cannot drift apart. Message types follow Flower's ``<category>.<action>``.
"""

TRAIN = "train"
RELAY_TRAIN = "train.relay"
LOCAL_TRAIN = "train.local"
FORGET_DATA = "query.forget_data"
RETAIN_DATA = "query.retain_data"
DELETION_COMPLETE = "query.deletion_complete"
LOCAL_EVAL = "query.local_eval"
VERIFY = "query.verify"

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
DATA = "data"
DELETION = "deletion"

RUN_CONFIG_KEY = "fedforget-config"
SERVER_ROUND = "server-round"
EPOCHS = "local-epochs"
LEARNING_RATE = "lr"
SEED = "seed"
NUM_CLASSES = "num-classes"
BRANCH = "branch"
RETAIN_SAMPLES = "retain-samples"
VERIFY_DIR = "verify-dir"
REPORT = "report"
REQUESTS = "requests"
CLASSES = "classes"

NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"
DELETION_PENDING = "deletion-pending"
NUM_FORGET = "num-forget"
DELETED_PASSES = "deleted-sample-passes"
DELETION_DONE = "deletion-done"
COMPUTE_SECONDS = "compute-seconds"
TRAIN_LOSS = "train-loss"
ACCURACY = "accuracy"
