"""The fedforget ClientApp: local training, deletion requests, data for unlearning, the relay.

Each simulated client is a Flower node whose ``node_config["partition-id"]`` names its slice of
the federation. The federation (data, partitions, deletion plan) is a pure function of the
configuration carried in every message, built once per Ray actor and cached
(:func:`fedforget.data.build_federation`); per-node facts that must survive across rounds
(whether the node's deletion was carried out) live in ``Context.state``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedforget import protocol as P
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset, Federation, build_federation
from fedforget.models import ClassifierModel, build_model
from fedforget.training import accuracy, train_local
from fedforget.verification import build_verifier, client_task

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


def _state_key(message: Message) -> str:
    """Where this node keeps its deletion state: one slot per branch of ``fedforget compare``.

    ``compare`` replays one deletion under several strategies from the same checkpoint; each
    branch names itself in the message config, so a node's deletion in one branch does not
    leak into the next. A plain run has a single, unnamed branch.
    """
    branch = str(message.content[P.CONFIG].get(P.BRANCH, ""))
    return f"{STATE_KEY}:{branch}" if branch else STATE_KEY


def deletion_done(context: Context, message: Message) -> bool:
    """Whether this node has carried out its deletion (its D_f is gone for good)."""
    record = context.state.get(_state_key(message))
    return bool(record is not None and record.get(P.DELETION_DONE, False))


def _reference_key(message: Message) -> str:
    """Where this node keeps the global model it received before asking for its deletion."""
    return f"{_state_key(message)}:reference"


def _mark_deletion_done(context: Context, message: Message) -> None:
    context.state[_state_key(message)] = ConfigRecord({P.DELETION_DONE: True})


def _local_data(
    federation: Federation, context: Context, message: Message
) -> tuple[ArrayDataset, np.ndarray]:
    drop = deletion_done(context, message)
    return federation.client_data(_partition_id(context), drop_deleted=drop)


def _data_reply(message: Message, context: Context, data: ArrayDataset) -> Message:
    arrays = ArrayRecord(array_dict={"x": Array(data.x), "y": Array(data.y)})
    metrics = MetricRecord({P.NUM_EXAMPLES: len(data), P.PARTITION_ID: _partition_id(context)})
    return Message(RecordDict({P.DATA: arrays, P.METRICS: metrics}), reply_to=message)


def _received_model(
    message: Message, federation: Federation, config: SimulationConfig
) -> ClassifierModel:
    model = build_model(
        config.model, federation.num_classes, federation.in_channels, federation.image_size
    )
    model.load_state_dict(message.content[P.ARRAYS].to_torch_state_dict())
    return model


def _deletion_pending(
    federation: Federation, context: Context, message: Message, server_round: int
) -> bool:
    holds = len(federation.client_forget_indices(_partition_id(context))) > 0
    arrived = server_round >= _config(message).deletion.round
    return holds and arrived and not deletion_done(context, message)


def _train_reply(message: Message, context: Context, epochs: int, lr: float) -> Message:
    config = _config(message)
    federation = build_federation(config)
    data, indices = _local_data(federation, context, message)
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
    pending = _deletion_pending(federation, context, message, server_round)
    if pending:  # the last global model before the deletion: the user's verification reference
        context.state[_reference_key(message)] = message.content[P.ARRAYS]
    metrics = MetricRecord(
        {
            P.NUM_EXAMPLES: result.num_examples,
            P.TRAIN_LOSS: result.mean_loss,
            P.COMPUTE_SECONDS: result.seconds,
            P.DELETED_PASSES: deleted_passes,
            P.DELETION_DONE: int(deletion_done(context, message)),
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


def _train_as_told(message: Message, context: Context) -> Message:
    config = message.content[P.CONFIG]
    return _train_reply(message, context, int(config[P.EPOCHS]), float(config[P.LEARNING_RATE]))


@app.train("relay")
def relay_train(message: Message, context: Context) -> Message:
    """Recovery relay (paper 000 IV.C.3): the weakest client trains the model it was sent."""
    return _train_as_told(message, context)


@app.train("local")
def local_train(message: Message, context: Context) -> Message:
    """Training asked for by an unlearner (e.g. FedEraser's calibration), on retained data."""
    return _train_as_told(message, context)


@app.query("forget_data")
def forget_data(message: Message, context: Context) -> Message:
    """Send D_f^i to the server, as paper 000 gathers D_f there for unlearning."""
    federation = build_federation(_config(message))
    indices = federation.client_forget_indices(_partition_id(context))
    if deletion_done(context, message):
        indices = indices[:0]
    return _data_reply(message, context, federation.train.subset(indices))


@app.query("retain_data")
def retain_data(message: Message, context: Context) -> Message:
    """Send a seeded sample of the retained local data, for methods that need one."""
    config = _config(message)
    federation = build_federation(config)
    data, _ = federation.client_data(_partition_id(context), drop_deleted=True)
    limit = int(message.content[P.CONFIG][P.RETAIN_SAMPLES])
    rng = np.random.default_rng(config.seed + _partition_id(context))
    keep = np.sort(rng.choice(len(data), min(limit, len(data)), replace=False))
    return _data_reply(message, context, data.subset(keep))


@app.query("deletion_complete")
def deletion_complete(message: Message, context: Context) -> Message:
    """The deletion is being carried out: drop the deleted samples for good."""
    federation = build_federation(_config(message))
    _mark_deletion_done(context, message)
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
    data, _ = _local_data(federation, context, message)
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


@app.query("verify")
def verify(message: Message, context: Context) -> Message:
    """The deleting user checks, on this node, that the received model forgot their data.

    The verifier (``--verify``) compares the received model with the global model this node
    received before it asked for the deletion (kept in ``Context.state``), using only what
    the node holds. The report travels back; the pictures go to the folder named in the
    message (the run folder in a simulation) or stay unwritten when none is named.
    """
    config = _config(message)
    federation = build_federation(config)
    stored = context.state.get(_reference_key(message))
    if stored is None:
        raise RuntimeError("this node kept no model from before its deletion request")
    reference = build_model(
        config.model, federation.num_classes, federation.in_channels, federation.image_size
    )
    reference.load_state_dict(stored.to_torch_state_dict())
    partition = _partition_id(context)
    task = client_task(
        federation,
        config,
        partition,
        _received_model(message, federation, config),
        reference,
        "the global model this client received before its deletion request",
    )
    name = config.verify.method
    options = {"seed": config.seed + partition, "device": str(_device(config))}
    verifier = build_verifier(name, **{**options, **config.methods.options.get(name, {})})
    result = verifier.verify(task)
    folder = str(message.content[P.CONFIG].get(P.VERIFY_DIR, ""))
    if folder:
        result.write(Path(folder) / f"client-{partition}")
    report = ConfigRecord({P.REPORT: json.dumps(result.to_json())})
    metrics = MetricRecord({P.PARTITION_ID: partition})
    return Message(RecordDict({P.CONFIG: report, P.METRICS: metrics}), reply_to=message)
