"""The fedforget ClientApp: local training, deletion requests, data for unlearning, the relay.

Each simulated client is a Flower node whose ``node_config["partition-id"]`` names its slice of
the federation. The federation (data, partitions, deletion plan) is a pure function of the
configuration carried in every message, built once per Ray actor and cached
(:func:`fedforget.data.build_federation`); per-node facts that must survive across rounds
(whether the node's deletion was carried out) live in ``Context.state``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedforget import protocol as P
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset, Federation, build_federation
from fedforget.models import ClassifierModel, build_model
from fedforget.training import accuracy, train_local

STATE_KEY = "fedforget"

app = ClientApp()


@functools.lru_cache(maxsize=4)
def _parse_config(text: str) -> SimulationConfig:
    config = SimulationConfig.model_validate_json(text)
    torch.set_num_threads(max(1, int(config.resources.client_cpus)))
    return config


def _config(message: Message) -> SimulationConfig:
    return _parse_config(str(message.content[P.CONFIG][P.RUN_CONFIG_KEY]))


def _device(config: SimulationConfig) -> torch.device:
    wants_gpu = config.resources.client_gpus > 0 and torch.cuda.is_available()
    return torch.device("cuda" if wants_gpu else "cpu")


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def deletion_done(context: Context) -> bool:
    """Whether this node has carried out its deletion (its D_f is gone for good)."""
    record = context.state.get(STATE_KEY)
    return bool(record is not None and record.get(P.DELETION_DONE, False))


def _mark_deletion_done(context: Context) -> None:
    context.state[STATE_KEY] = ConfigRecord({P.DELETION_DONE: True})


def _local_data(federation: Federation, context: Context) -> tuple[ArrayDataset, np.ndarray]:
    return federation.client_data(_partition_id(context), drop_deleted=deletion_done(context))


def _received_model(
    message: Message, federation: Federation, config: SimulationConfig
) -> ClassifierModel:
    model = build_model(
        config.model, federation.num_classes, federation.in_channels, federation.image_size
    )
    model.load_state_dict(message.content[P.ARRAYS].to_torch_state_dict())
    return model


def _deletion_pending(
    federation: Federation, context: Context, config: SimulationConfig, server_round: int
) -> bool:
    holds = len(federation.client_forget_indices(_partition_id(context))) > 0
    arrived = server_round >= config.deletion.round
    return holds and arrived and not deletion_done(context)


def _train_reply(message: Message, context: Context, epochs: int, lr: float) -> Message:
    config = _config(message)
    federation = build_federation(config)
    data, indices = _local_data(federation, context)
    if len(data) == 0:
        raise RuntimeError("this client holds no data any more (it left the federation)")
    model = _received_model(message, federation, config)
    server_round = int(message.content[P.CONFIG].get(P.SERVER_ROUND, 0))
    result = train_local(
        model,
        data,
        epochs=epochs,
        lr=lr,
        momentum=config.train.momentum,
        batch_size=config.train.batch_size,
        seed=int(message.content[P.CONFIG].get(P.SEED, 0)) + _partition_id(context),
        device=_device(config),
    )
    deleted_passes = int(result.index_counts[federation.is_deleted(indices)].sum())
    pending = _deletion_pending(federation, context, config, server_round)
    metrics = MetricRecord(
        {
            P.NUM_EXAMPLES: result.num_examples,
            P.TRAIN_LOSS: result.mean_loss,
            P.COMPUTE_SECONDS: result.seconds,
            P.DELETED_PASSES: deleted_passes,
            P.DELETION_DONE: int(deletion_done(context)),
            P.DELETION_PENDING: int(pending),
            P.NUM_FORGET: len(federation.client_forget_indices(_partition_id(context))),
            P.PARTITION_ID: _partition_id(context),
        }
    )
    arrays = ArrayRecord(model.state_dict())
    return Message(RecordDict({P.ARRAYS: arrays, P.METRICS: metrics}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """A FedAvg round: train on the local data that is still held; report pending deletions."""
    train = _config(message).train
    return _train_reply(message, context, train.local_epochs, train.lr)


@app.train("relay")
def relay_train(message: Message, context: Context) -> Message:
    """Recovery relay (paper 000 IV.C.3): the weakest client trains the model it was sent."""
    config = message.content[P.CONFIG]
    return _train_reply(message, context, int(config[P.EPOCHS]), float(config[P.LEARNING_RATE]))


@app.query("forget_data")
def forget_data(message: Message, context: Context) -> Message:
    """Send D_f^i to the server, as paper 000 gathers D_f there for unlearning."""
    federation = build_federation(_config(message))
    indices = federation.client_forget_indices(_partition_id(context))
    if deletion_done(context):
        indices = indices[:0]
    forget = federation.train.subset(indices)
    arrays = ArrayRecord(array_dict={"x": Array(forget.x), "y": Array(forget.y)})
    metrics = MetricRecord({P.NUM_EXAMPLES: len(forget), P.PARTITION_ID: _partition_id(context)})
    return Message(RecordDict({P.FORGET: arrays, P.METRICS: metrics}), reply_to=message)


@app.query("deletion_complete")
def deletion_complete(message: Message, context: Context) -> Message:
    """The server has unlearned: drop the deleted samples for good."""
    federation = build_federation(_config(message))
    _mark_deletion_done(context)
    dropped = len(federation.client_forget_indices(_partition_id(context)))
    metrics = MetricRecord({P.NUM_FORGET: dropped, P.PARTITION_ID: _partition_id(context)})
    return Message(RecordDict({P.METRICS: metrics}), reply_to=message)


@app.query("local_eval")
def local_eval(message: Message, context: Context) -> Message:
    """Recovery relay: test the received model on this client's local data.

    At most ``recovery.eval_samples`` local samples (a fixed seeded subset) are scored: the
    relay only needs to rank clients and check a threshold, and every hop evaluates them all.
    """
    config = _config(message)
    federation = build_federation(config)
    data, _ = _local_data(federation, context)
    limit = config.recovery.eval_samples
    if len(data) > limit:
        rng = np.random.default_rng(config.seed + _partition_id(context))
        data = data.subset(np.sort(rng.choice(len(data), limit, replace=False)))
    model = _received_model(message, federation, config)
    score = accuracy(model, data, _device(config)) if len(data) else 1.0
    metrics = MetricRecord(
        {P.ACCURACY: score, P.NUM_EXAMPLES: len(data), P.PARTITION_ID: _partition_id(context)}
    )
    return Message(RecordDict({P.METRICS: metrics}), reply_to=message)
