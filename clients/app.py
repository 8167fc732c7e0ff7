"""The fedforget ClientApp: local training, deletion requests, data for unlearning, the relay.

A node is either a simulated client (``node_config["partition-id"]`` names its slice of the
federation, a pure function of the configuration carried in every message and cached per
Ray actor by :func:`fedforget.data.build_federation`) or a real SuperNode with its own data
and deletion requests in ``node_config["node-dir"]`` (:mod:`fedforget.node`); the handlers
below serve both through :mod:`fedforget.clients.nodes`. Per-node facts that must survive
across messages of a run (the simulated deletion's state, the model kept for verification)
live in ``Context.state``.
"""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedforget import protocol as P
from fedforget.clients.nodes import STATE_KEY, LocalNode, node_for
from fedforget.clients.policy import NodePolicy
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset
from fedforget.federated import State
from fedforget.gan import ConditionalGan, GanTrainResult, build_conditional_gan, train_gan
from fedforget.models import ClassifierModel, build_model
from fedforget.registry import load_plugins
from fedforget.strategies.registry import build_configured_unlearner
from fedforget.training import StepHook, accuracy, train_local
from fedforget.unlearning import UnlearningContext, UnlearningRequest
from fedforget.unlearning.fedau import (
    AuxiliaryHead,
    AuxiliaryTraining,
    FedAUUnlearner,
    auxiliary_labels,
)
from fedforget.unlearning.quickdrop import (
    GradientMatchingDistiller,
    QuickDropUnlearner,
    distillation_hook,
)
from fedforget.verification import build_verifier

app = ClientApp()


@functools.lru_cache(maxsize=4)
def _parse_config(text: str) -> SimulationConfig:
    config = SimulationConfig.model_validate_json(text)
    torch.set_num_threads(max(1, int(config.resources.client_cpus)))
    return config


def _config(message: Message, context: Context) -> SimulationConfig:
    """The run's configuration, after the node's own policy allowed its plugins."""
    config = _parse_config(str(message.content[P.CONFIG][P.RUN_CONFIG_KEY]))
    NodePolicy.from_node(context.node_config).check_plugins(config.plugins)
    load_plugins(config.plugins)  # the user's models and datasets register themselves
    return config


def _node(message: Message, context: Context) -> LocalNode:
    return node_for(_config(message, context), context, message)


def _device(config: SimulationConfig) -> torch.device:
    wants_gpu = config.resources.client_gpus > 0 and torch.cuda.is_available()
    return torch.device("cuda" if wants_gpu else "cpu")


def _reference_key(node: LocalNode) -> str:
    """Where this node keeps the global model it received before asking for its deletion."""
    return f"{node.state_key}:reference"


def _requests(message: Message, node: LocalNode) -> list[str]:
    """The request ids the server names for this node (empty: all pending ones)."""
    text = str(message.content[P.CONFIG].get(P.REQUESTS, ""))
    return list(json.loads(text).get(str(node.context.node_id), [])) if text else []


def _model_shape(data: ArrayDataset, num_classes: int) -> tuple[int, int, int]:
    """The run model's classes, input channels and image size for images like ``data``'s."""
    return num_classes, int(data.x.shape[1]), int(data.x.shape[2])


def _new_model(config: SimulationConfig, data: ArrayDataset, num_classes: int) -> ClassifierModel:
    return build_model(config.model, *_model_shape(data, num_classes))


def _received_model(message: Message, node: LocalNode) -> ClassifierModel:
    return _model_from(message.content[P.ARRAYS].to_torch_state_dict(), node)


def _refilled_model(message: Message, node: LocalNode, data: ArrayDataset) -> ClassifierModel:
    """This process's model for images like ``data``'s, holding the received weights.

    For plain local training only: the model is shared by every message this actor serves,
    so a handler that keeps a model, holds two at once or hooks into one builds its own.
    """
    shape = _model_shape(data, int(message.content[P.CONFIG][P.NUM_CLASSES]))
    model = _process_model(node.config.model, tuple(node.config.plugins), *shape)
    model.load_state_dict(message.content[P.ARRAYS].to_torch_state_dict())
    return model


@functools.lru_cache(maxsize=2)
def _process_model(
    name: str, plugins: tuple[str, ...], num_classes: int, channels: int, size: int
) -> ClassifierModel:
    """One model per run shape and process (``plugins`` in the key: they may rename models).

    Building a model initialises every layer only for the received weights to replace them,
    a cost per message that a round over hundreds of clients pays hundreds of times.
    """
    return build_model(name, num_classes, channels, size)


def _model_from(state: dict, node: LocalNode) -> ClassifierModel:
    """The run's model with ``state``; its shape from the node's data and the message."""
    data, _ = node.training_data()
    num_classes = int(node.message.content[P.CONFIG][P.NUM_CLASSES])
    model = _new_model(node.config, data, num_classes)
    model.load_state_dict(state)
    return model


def _data_record(data: ArrayDataset) -> ArrayRecord:
    return ArrayRecord(array_dict={"x": Array(data.x), "y": Array(data.y)})


def _data_reply(message: Message, node: LocalNode, data: ArrayDataset) -> Message:
    metrics = MetricRecord({P.NUM_EXAMPLES: len(data), P.PARTITION_ID: node.partition_id})
    return Message(RecordDict({P.DATA: _data_record(data), P.METRICS: metrics}), reply_to=message)


def _train_reply(
    message: Message,
    context: Context,
    epochs: int,
    lr: float,
    proximal_mu: float = 0.0,
    max_samples: int | None = None,
) -> Message:
    node = _node(message, context)
    config = node.config
    data, ids = _held_data(node)
    if max_samples is not None and len(data) > max_samples:  # a relay hop: a seeded subset
        keep = _seeded_positions(len(data), max_samples, _seed(message, node))
        data, ids = data.subset(keep), ids[keep]
    hooked = P.DISTIL in message.content[P.CONFIG] or P.AUXILIARY in message.content[P.CONFIG]
    model = _received_model(message, node) if hooked else _refilled_model(message, node, data)
    distiller = _distiller(message, node, data) if P.DISTIL in message.content[P.CONFIG] else None
    every = _quickdrop(config).settings.distil_every if distiller is not None else 1
    hooks = [distillation_hook(distiller, every)] if distiller is not None else []
    auxiliary = None
    if P.AUXILIARY in message.content[P.CONFIG]:  # FedAU: only a node with data to delete
        joint = bool(int(message.content[P.CONFIG][P.AUXILIARY]))  # 0: compare's shared model
        auxiliary = _auxiliary_training(node, data, node.deleted_mask(ids), lr, joint)
        hooks += [auxiliary] if auxiliary is not None else []
    result = train_local(
        model,
        data,
        epochs=epochs,
        lr=lr,
        momentum=config.train.momentum,
        batch_size=config.train.batch_size,
        seed=_seed(message, node),
        device=_device(config),
        proximal_mu=proximal_mu,
        on_step=_chained(hooks),
    )
    deleted_passes = int(result.index_counts[node.deleted_mask(ids)].sum())
    metrics = {
        P.NUM_EXAMPLES: result.num_examples,
        P.TRAIN_LOSS: result.mean_loss,
        P.COMPUTE_SECONDS: result.seconds,
        P.GAN_SECONDS: 0.0,  # every reply of a round carries the same keys (FedAvg checks)
        P.DISTIL_SECONDS: 0.0,
        P.AUXILIARY_SECONDS: 0.0,
    }
    if distiller is not None:  # QuickDrop: the synthetic set stays on the node
        _keep_synthetic(context, node, distiller.synthetic_set())
        metrics[P.DISTIL_SECONDS] = distiller.seconds
    if auxiliary is not None and auxiliary.state() is not None:  # FedAU: W_a stays too
        _keep_arrays(context, node, "auxiliary", auxiliary.state())
        metrics[P.AUXILIARY_SECONDS] = auxiliary.total_seconds
    content = RecordDict({P.ARRAYS: ArrayRecord(model.state_dict())})
    if P.GAN in message.content:  # MuGAN: the generator learns alongside the classifier
        gan, gan_result = _trained_gan(message.content[P.GAN], node, data)
        content[P.GAN] = ArrayRecord(gan.state_dict())
        metrics[P.GAN_SECONDS] = gan_result.seconds
        deleted_passes += config.gan.epochs * int(node.deleted_mask(ids).sum())
    return _round_reply(message, context, node, content, metrics, deleted_passes)


def _chained(hooks: list[StepHook]) -> StepHook | None:
    """One step hook that calls ``hooks`` in order (``None`` when there are none)."""
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def chained(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        for hook in hooks:
            hook(model, x, y)

    return chained


def _quickdrop(config: SimulationConfig) -> QuickDropUnlearner:
    unlearner = build_configured_unlearner(config, QuickDropUnlearner.name)
    assert isinstance(unlearner, QuickDropUnlearner)
    return unlearner


def _kept_arrays(context: Context, node: LocalNode, name: str) -> State | None:
    """Arrays this node keeps across messages under ``name`` (QuickDrop's synthetic set,
    FedAU's head): its ``compare`` branch's, else the base run's (none kept: ``None``)."""
    for key in dict.fromkeys((f"{node.state_key}:{name}", f"{STATE_KEY}:{name}")):
        record = context.state.get(key)
        if record is not None:
            return {item: array.numpy() for item, array in record.items()}
    return None


def _keep_arrays(context: Context, node: LocalNode, name: str, arrays: State) -> None:
    """Keep ``arrays`` under ``name`` in this node's (``compare`` branch's) slot."""
    record = ArrayRecord(array_dict={item: Array(value) for item, value in arrays.items()})
    context.state[f"{node.state_key}:{name}"] = record


def _stored_synthetic(context: Context, node: LocalNode) -> ArrayDataset | None:
    """This node's synthetic set: its ``compare`` branch's, else the one the base run made."""
    arrays = _kept_arrays(context, node, "synthetic")
    return ArrayDataset(x=arrays["x"], y=arrays["y"]) if arrays is not None else None


def _keep_synthetic(context: Context, node: LocalNode, synthetic: ArrayDataset) -> None:
    _keep_arrays(context, node, "synthetic", {"x": synthetic.x, "y": synthetic.y})


def _distiller(message: Message, node: LocalNode, data: ArrayDataset) -> GradientMatchingDistiller:
    """QuickDrop's distiller on this node's kept synthetic set (drawn from ``data`` at first)."""
    quickdrop = _quickdrop(node.config)
    device = _device(node.config)
    stored = _stored_synthetic(node.context, node)
    if stored is None or len(stored) == 0:  # none yet, or dropped by a deletion: redraw
        num_classes = int(message.content[P.CONFIG][P.NUM_CLASSES])
        seed = node.config.seed + node.partition_id
        return quickdrop.new_distiller(data, num_classes, seed, device)
    return GradientMatchingDistiller(stored, lr=quickdrop.settings.image_lr, device=device)


def _stored_auxiliary(context: Context, node: LocalNode) -> State | None:
    """This node's FedAU head W_a (none, or dropped after the deletion: ``None``)."""
    return _kept_arrays(context, node, "auxiliary") or None


def _auxiliary_training(
    node: LocalNode, data: ArrayDataset, marked: np.ndarray, lr: float, joint: bool
) -> AuxiliaryTraining | None:
    """FedAU's W_a training on this node, when it holds samples it will delete.

    Only the modes FedAU carries out train a head (the unlearner refuses the others);
    ``joint`` False keeps the body out of W_a's training whatever the settings say.
    """
    config = node.config
    fedau = build_configured_unlearner(config, FedAUUnlearner.name)
    assert isinstance(fedau, FedAUUnlearner)
    mode = config.deletion.mode
    if mode not in fedau.modes or not marked.any():
        return None
    num_classes = int(node.message.content[P.CONFIG][P.NUM_CLASSES])
    classes = tuple(config.deletion.forget_classes)
    seed = config.seed + node.partition_id
    labels = auxiliary_labels(data.y, marked, mode, num_classes, classes, seed)
    device = _device(config)

    def new_head(model: torch.nn.Module, kept: State | None) -> AuxiliaryHead:
        return fedau.new_head(model, kept, mode, lr, device, joint=joint)

    kept = _stored_auxiliary(node.context, node)
    batch_size = config.train.batch_size
    return AuxiliaryTraining(
        data, labels, new_head, kept, batch_size=batch_size, seed=_seed(node.message, node)
    )


def _held_data(node: LocalNode) -> tuple[ArrayDataset, np.ndarray]:
    data, ids = node.training_data()
    if len(data) == 0:
        raise RuntimeError("this client holds no data any more (it left the federation)")
    return data, ids


def _seeded_positions(size: int, limit: int, seed: int) -> np.ndarray:
    """``limit`` of ``size`` positions, drawn with ``seed``, in order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, limit, replace=False))


def _seed(message: Message, node: LocalNode) -> int:
    return int(message.content[P.CONFIG].get(P.SEED, 0)) + node.partition_id


def _trained_gan(
    record: ArrayRecord, node: LocalNode, data: ArrayDataset
) -> tuple[ConditionalGan, GanTrainResult]:
    """The received conditional GAN after the configured local epochs on ``data``."""
    config = node.config
    num_classes = int(node.message.content[P.CONFIG][P.NUM_CLASSES])
    gan = build_conditional_gan(num_classes, data.x.shape[1:], width=config.gan.width)
    gan.load_state_dict(record.to_torch_state_dict())
    result = train_gan(
        gan,
        data,
        epochs=config.gan.epochs,
        lr=config.gan.lr,
        batch_size=config.gan.batch_size,
        seed=_seed(node.message, node),
        device=_device(config),
    )
    return gan.cpu(), result


def _round_reply(
    message: Message,
    context: Context,
    node: LocalNode,
    content: RecordDict,
    metrics: dict[str, float | int],
    deleted_passes: int,
) -> Message:
    """A training reply: the trained arrays, metrics and this node's pending deletion.

    When the round's config sets ``attach-forget`` (the server's unlearner needs D_f), a
    pending deletion's D_f travels in the same reply, as paper 000's client sends it with its
    request: the deletion step then needs no ``query.forget_data`` round trip.
    """
    server_round = int(message.content[P.CONFIG].get(P.SERVER_ROUND, 0))
    pending = node.pending(server_round)
    if pending.count:  # the last global model before the deletion: the verification reference
        context.state[_reference_key(node)] = message.content[P.ARRAYS]
    content[P.METRICS] = MetricRecord(
        {
            **metrics,
            P.DELETED_PASSES: deleted_passes,
            P.DELETION_DONE: int(node.deletion_done()),
            P.DELETION_PENDING: int(pending.count > 0),
            P.NUM_FORGET: pending.count,
            P.PARTITION_ID: node.partition_id,
        }
    )
    if pending.requests:
        content[P.DELETION] = ConfigRecord(
            {P.REQUESTS: list(pending.requests), P.CLASSES: list(pending.classes)}
        )
    if pending.count and int(message.content[P.CONFIG].get(P.ATTACH_FORGET, 0)):
        content[P.DATA] = _data_record(node.forget_data(list(pending.requests)))
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """A FedAvg round: train on the local data that is still held; report pending deletions."""
    train = _config(message, context).train
    return _train_reply(message, context, train.local_epochs, train.lr)


def _train_as_told(message: Message, context: Context) -> Message:
    config = message.content[P.CONFIG]
    mu = float(config[P.PROXIMAL_MU]) if P.PROXIMAL_MU in config else 0.0
    limit = int(config[P.MAX_SAMPLES]) if P.MAX_SAMPLES in config else None
    epochs, lr = int(config[P.EPOCHS]), float(config[P.LEARNING_RATE])
    return _train_reply(message, context, epochs, lr, mu, max_samples=limit)


@app.train("gan")
def gan_train(message: Message, context: Context) -> Message:
    """A FedAvg round of the GAN task: train the conditional GAN on the data still held."""
    node = _node(message, context)
    data, ids = _held_data(node)
    gan, result = _trained_gan(message.content[P.ARRAYS], node, data)
    metrics = {
        P.NUM_EXAMPLES: result.num_examples,
        P.TRAIN_LOSS: result.d_loss,
        P.GAN_LOSS: result.g_loss,
        P.COMPUTE_SECONDS: result.seconds,
    }
    deleted_passes = node.config.gan.epochs * int(node.deleted_mask(ids).sum())
    content = RecordDict({P.ARRAYS: ArrayRecord(gan.state_dict())})
    return _round_reply(message, context, node, content, metrics, deleted_passes)


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
    node = _node(message, context)
    return _data_reply(message, node, node.forget_data(_requests(message, node)))


@app.query("retain_data")
def retain_data(message: Message, context: Context) -> Message:
    """Send a seeded sample of the retained local data, for methods that need one."""
    node = _node(message, context)
    data = node.retained_data()
    limit = int(message.content[P.CONFIG][P.RETAIN_SAMPLES])
    rng = np.random.default_rng(node.config.seed + node.partition_id)
    keep = np.sort(rng.choice(len(data), min(limit, len(data)), replace=False))
    return _data_reply(message, node, data.subset(keep))


@app.query("deletion_complete")
def deletion_complete(message: Message, context: Context) -> Message:
    """The deletion is being carried out: drop the deleted samples for good."""
    node = _node(message, context)
    server_round = int(message.content[P.CONFIG].get(P.SERVER_ROUND, 0))
    dropped = node.carry_out(_requests(message, node), server_round)
    _drop_deleted_synthetic(message, context, node)
    if _stored_auxiliary(context, node) is not None:  # FedAU's head was made from D_f
        _keep_arrays(context, node, "auxiliary", {})
    metrics: dict[str, float | int] = {P.NUM_FORGET: dropped, P.PARTITION_ID: node.partition_id}
    if message.content.array_records:  # a relay candidate: score the model, D_f now gone
        metrics.update(_local_scores(message, node))
    return Message(RecordDict({P.METRICS: MetricRecord(metrics)}), reply_to=message)


def _drop_deleted_synthetic(message: Message, context: Context, node: LocalNode) -> None:
    """Drop the synthetic images the deleted data helped make (QuickDrop's set, if kept).

    A class deletion drops the forgotten classes' images; any other deletion the whole set
    (its images condense every sample of their class, the deleted ones included).
    """
    synthetic = _stored_synthetic(context, node)
    if synthetic is None:
        return
    config = message.content[P.CONFIG]
    classes = json.loads(str(config.get(P.CLASSES, "[]")))
    if str(config.get(P.MODE, "")) == "class" and classes:
        keep = np.flatnonzero(~np.isin(synthetic.y, classes))
    else:
        keep = np.empty(0, dtype=np.int64)
    _keep_synthetic(context, node, synthetic.subset(keep))


@app.query("synthetic")
def synthetic_data(message: Message, context: Context) -> Message:
    """QuickDrop: send the synthetic set this node distilled during training (none: empty)."""
    node = _node(message, context)
    synthetic = _stored_synthetic(context, node)
    if synthetic is None:
        data, _ = node.training_data()
        synthetic = data.subset(np.empty(0, dtype=np.int64))
    return _data_reply(message, node, synthetic)


@app.query("auxiliary")
def auxiliary_head(message: Message, context: Context) -> Message:
    """FedAU: send the auxiliary head this node trained during learning (none: empty)."""
    node = _node(message, context)
    head = _stored_auxiliary(context, node) or {}
    arrays = ArrayRecord(array_dict={name: Array(value) for name, value in head.items()})
    metrics = MetricRecord({P.PARTITION_ID: node.partition_id})
    return Message(RecordDict({P.ARRAYS: arrays, P.METRICS: metrics}), reply_to=message)


@app.query("deletion_status")
def deletion_status(message: Message, context: Context) -> Message:
    """A client the round did not sample reports its pending deletion (no training)."""
    node = _node(message, context)
    metrics = {P.NUM_EXAMPLES: 0, P.COMPUTE_SECONDS: 0.0}
    return _round_reply(message, context, node, RecordDict(), metrics, deleted_passes=0)


@app.query("local_eval")
def local_eval(message: Message, context: Context) -> Message:
    """Recovery relay: test the received models on this client's local data.

    At most ``recovery.eval_samples`` local samples (a fixed seeded subset) are scored: the
    relay only needs to rank clients and compare models, and every hop evaluates them all.
    The message's ``arrays`` is scored as ``accuracy``, each further ``arrays:<i>`` as
    ``accuracy:<i>`` (the relay sends the models before and after unlearning together).
    """
    node = _node(message, context)
    metrics = {P.PARTITION_ID: node.partition_id, **_local_scores(message, node)}
    return Message(RecordDict({P.METRICS: MetricRecord(metrics)}), reply_to=message)


def _local_scores(message: Message, node: LocalNode) -> dict[str, float | int]:
    """The accuracy of every model ``message`` carries on this node's seeded eval subset."""
    config = node.config
    data, _ = node.training_data()
    limit = config.recovery.eval_samples
    if len(data) > limit:
        data = data.subset(_seeded_positions(len(data), limit, config.seed + node.partition_id))
    started = time.perf_counter()
    metrics: dict[str, float | int] = {P.NUM_EXAMPLES: len(data)}
    for name, record in message.content.array_records.items():
        key = P.ACCURACY + name.removeprefix(P.ARRAYS)
        model = _model_from(record.to_torch_state_dict(), node)
        metrics[key] = accuracy(model, data, _device(config)) if len(data) else 1.0
    metrics[P.COMPUTE_SECONDS] = time.perf_counter() - started  # the deletion step's cost
    return metrics


@app.query("verify")
def verify(message: Message, context: Context) -> Message:
    """The deleting user checks, on this node, that the received model forgot their data.

    The verifier (``--verify``) compares the received model with the global model this node
    received before it asked for the deletion (kept in ``Context.state``), using only what
    the node holds. The report travels back; the pictures go under the node's own folder
    (``<node-dir>/verification``), or to the folder named in the message when the node allows
    it (the run folder of ``fedforget simulate``), else stay unwritten.
    """
    node = _node(message, context)
    config = node.config
    stored = context.state.get(_reference_key(node))
    if stored is None:
        raise RuntimeError("this node kept no model from before its deletion request")
    task = node.verification_task(
        _received_model(message, node),
        _model_from(stored.to_torch_state_dict(), node),
        "the global model this client received before its deletion request",
    )
    name = config.verify.method
    options = {"seed": config.seed + node.partition_id, "device": str(_device(config))}
    verifier = build_verifier(name, **{**options, **config.methods.options.get(name, {})})
    result = verifier.verify(task)
    requested = str(message.content[P.CONFIG].get(P.VERIFY_DIR, ""))
    client = f"client-{node.partition_id}"
    folder = node.policy.verification_folder(requested, message.metadata.run_id, client)
    if folder is not None:
        result.write(folder)
    report = ConfigRecord({P.REPORT: json.dumps(result.to_json())})
    metrics = MetricRecord({P.PARTITION_ID: node.partition_id})
    return Message(RecordDict({P.CONFIG: report, P.METRICS: metrics}), reply_to=message)


@app.query("forget_eval")
def forget_eval(message: Message, context: Context) -> Message:
    """A deleting node scores the models it is sent on its own deleted samples.

    The server of a deployment holds no D_f; the node does (the user's own data, no longer
    trained on). Each ArrayRecord of the message is one phase's model; only the accuracies
    and the sample count travel back.
    """
    node = _node(message, context)
    data = node.deleted_data()
    metrics: dict[str, float | int] = {P.NUM_EXAMPLES: len(data), P.PARTITION_ID: node.partition_id}
    if len(data):
        device = _device(node.config)
        for phase, record in message.content.array_records.items():
            model = _model_from(record.to_torch_state_dict(), node)
            metrics[f"{P.ACCURACY}:{phase}"] = accuracy(model, data, device)
    return Message(RecordDict({P.METRICS: MetricRecord(metrics)}), reply_to=message)


@app.train("unlearn")
def unlearn(message: Message, context: Context) -> Message:
    """``--unlearn-on client``: unlearn this node's own D_f locally; only weights leave.

    The configured unlearner runs here on the received model, with the run's initial weights
    (the incompetent teacher of distillation) sent along; D_f never leaves the node.
    """
    node = _node(message, context)
    config = node.config
    settings = message.content[P.CONFIG]
    forget = node.forget_data(_requests(message, node))
    model = _received_model(message, node)
    unlearner = build_configured_unlearner(config, config.strategy)
    unlearner.check_model(model)
    initial = message.content[P.INITIAL_ARRAYS].to_torch_state_dict()
    started = time.perf_counter()
    unlearned = unlearner.unlearn(
        model,
        UnlearningRequest(
            forget=forget,
            num_classes=int(settings[P.NUM_CLASSES]),
            mode=str(settings[P.MODE]),
            forget_classes=tuple(json.loads(str(settings[P.CLASSES]))),
        ),
        UnlearningContext(
            initial_state={key: value.numpy() for key, value in initial.items()},
            build_model=lambda: _model_from(initial, node),
            device=_device(config),
            seed=int(settings[P.SEED]),
        ),
    )
    metrics = MetricRecord(
        {
            P.NUM_EXAMPLES: len(forget),
            P.COMPUTE_SECONDS: time.perf_counter() - started,
            P.PARTITION_ID: node.partition_id,
        }
    )
    arrays = ArrayRecord(unlearned.cpu().state_dict())
    return Message(RecordDict({P.ARRAYS: arrays, P.METRICS: metrics}), reply_to=message)
