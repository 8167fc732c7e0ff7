"""The fedforget ClientApp: local training, deletion requests, the relay, verification.

A node is either a simulated client (``node_config["partition-id"]`` names its slice of the
federation, a pure function of the configuration carried in every message and cached per
Ray actor by :func:`fedforget.data.build_federation`) or a real SuperNode with its own data
and deletion requests in ``node_config["node-dir"]`` (:mod:`fedforget.node`); the handlers
below serve both through :mod:`fedforget.clients.nodes`. Per-node facts that must survive
across messages of a run (the simulated deletion's state, the model kept for verification,
what a method's training-time hook kept) live in ``Context.state``.

What a method needs from the clients is answered by the data needs (:mod:`fedforget.needs`):
their handlers are registered here, and their work during training runs next to the local
training, without this module naming any method. A need that a plugin module registers is
served too: a message the app does not know yet loads the run's plugins first.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedforget import protocol as P
from fedforget.clients.nodes import STATE_KEY, LocalNode, node_for
from fedforget.clients.policy import NodePolicy
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset
from fedforget.federated import State
from fedforget.models import ClassifierModel, build_model
from fedforget.needs import NEEDS, ClientWork
from fedforget.needs.records import arrays_from, data_record, numpy_state
from fedforget.registry import load_plugins
from fedforget.training import StepHook, accuracy, train_local
from fedforget.unlearning import (
    Unlearner,
    UnlearningContext,
    UnlearningRequest,
    configured_unlearner,
)
from fedforget.verification import build_verifier


class FedforgetClientApp(ClientApp):
    """Flower's ClientApp that also serves the messages of needs registered by plugins.

    A need's handlers are registered when the app first sees its message type; a type the
    registry does not know yet first loads the run's plugins (which register their needs).
    """

    def __call__(self, message: Message, context: Context) -> Message:
        if message.metadata.message_type not in self._registered_funcs:
            if P.CONFIG in message.content and P.RUN_CONFIG_KEY in message.content[P.CONFIG]:
                _config(message, context)  # the node's policy, then the run's plugins
            register_need_handlers(self)
        order = message.content.config_records.get(P.DROP_ORDER)
        if order is None:
            return super().__call__(message, context)
        # D_f goes before the message is handled: nothing this message does may use it
        dropped = _drop_deleted(NodeView(_Ordered(RecordDict({P.CONFIG: order}), message), context))
        reply = super().__call__(message, context)
        if not reply.has_error():
            if P.METRICS not in reply.content:
                reply.content[P.METRICS] = MetricRecord({})
            reply.content[P.METRICS][P.ORDER_DONE] = dropped
        return reply


@dataclass(frozen=True)
class _Ordered:
    """A drop order as the node reads a ``query.deletion_complete``: its config, and the
    metadata (run id) of the message it rode on."""

    content: RecordDict
    carrier: Message

    @property
    def metadata(self) -> Any:
        return self.carrier.metadata


app = FedforgetClientApp()


def register_need_handlers(client_app: ClientApp) -> None:
    """Register every registered need's handlers that ``client_app`` lacks."""
    for need in NEEDS.values():
        for message_type, handler in need.client_handlers().items():
            if message_type in client_app._registered_funcs:
                continue
            category, _, action = message_type.partition(".")
            decorator = client_app.query if category == "query" else client_app.train
            decorator(action)(_serving(handler))


def _serving(handler):
    """A need's ``handler(view)`` as a Flower handler ``(message, context) -> reply``."""

    @functools.wraps(handler)
    def serve(message: Message, context: Context) -> Message:
        return handler(NodeView(message, context))

    return serve


@functools.lru_cache(maxsize=4)
def _parse_config(text: str) -> SimulationConfig:
    config = SimulationConfig.model_validate_json(text)
    torch.set_num_threads(max(1, int(config.resources.client_cpus)))
    return config


def _config(message: Message, context: Context) -> SimulationConfig:
    """The run's configuration, after the node's own policy allowed its plugins."""
    config = _parse_config(str(message.content[P.CONFIG][P.RUN_CONFIG_KEY]))
    NodePolicy.from_node(context.node_config).check_plugins(config.plugins)
    load_plugins(config.plugins)  # the user's models, datasets, methods register themselves
    return config


def _device(config: SimulationConfig) -> torch.device:
    wants_gpu = config.resources.client_gpus > 0 and torch.cuda.is_available()
    return torch.device("cuda" if wants_gpu else "cpu")


class NodeView:
    """One message on one node, as the handlers and the data needs see it.

    Implements :class:`fedforget.needs.ClientView`: the node's data and deletions
    (:class:`~fedforget.clients.nodes.LocalNode`), the message's settings, replies, and the
    arrays kept in ``Context.state`` (per ``compare`` branch, the base run's as fallback).
    """

    def __init__(self, message: Message, context: Context) -> None:
        self.message = message
        self.context = context
        self.config = _config(message, context)
        self.node: LocalNode = node_for(self.config, context, message)
        self.partition_id = self.node.partition_id
        self._held: tuple[ArrayDataset, np.ndarray] | None = None

    @property
    def device(self) -> torch.device:
        return _device(self.config)

    @property
    def num_classes(self) -> int:
        return int(self.message.content[P.CONFIG][P.NUM_CLASSES])

    @property
    def round_seed(self) -> int:
        return int(self.message.content[P.CONFIG].get(P.SEED, 0)) + self.partition_id

    def training_data(self) -> tuple[ArrayDataset, np.ndarray]:
        """The data this message trains on (a relay hop's seeded subset included)."""
        if self._held is None:
            self._held = self.node.training_data()
        return self._held

    def hold(self, data: ArrayDataset, ids: np.ndarray) -> None:
        """The data this message trains on, when it is not all the node holds."""
        self._held = (data, ids)

    def retained_data(self) -> ArrayDataset:
        return self.node.retained_data()

    def deleted_mask(self, ids: np.ndarray) -> np.ndarray:
        return self.node.deleted_mask(ids)

    def requests(self) -> list[str]:
        """The request ids the server names for this node (empty: all pending ones)."""
        text = str(self.message.content[P.CONFIG].get(P.REQUESTS, ""))
        return list(json.loads(text).get(str(self.context.node_id), [])) if text else []

    def forget_data(self) -> ArrayDataset:
        return self.node.forget_data(self.requests())

    def reply(self, records: dict, metrics: dict[str, float | int]) -> Message:
        content = RecordDict(dict(records))
        content[P.METRICS] = MetricRecord({**metrics, P.PARTITION_ID: self.partition_id})
        return Message(content, reply_to=self.message)

    def data_reply(self, data: ArrayDataset) -> Message:
        return self.reply({P.DATA: data_record(data)}, {P.NUM_EXAMPLES: len(data)})

    def train_as_told(self) -> Message:
        config = self.message.content[P.CONFIG]
        mu = float(config[P.PROXIMAL_MU]) if P.PROXIMAL_MU in config else 0.0
        limit = int(config[P.MAX_SAMPLES]) if P.MAX_SAMPLES in config else None
        epochs, lr = int(config[P.EPOCHS]), float(config[P.LEARNING_RATE])
        return _train_reply(self, epochs, lr, mu, max_samples=limit)

    def kept(self, name: str) -> tuple[State, str] | None:
        for slot in dict.fromkeys((self.node.state_key, STATE_KEY)):
            record = self.context.state.get(f"{slot}:{name}")
            if record is not None:
                owner = self.context.state.get(f"{slot}:{name}:owner")
                return numpy_state(record), str(owner["owner"]) if owner is not None else ""
        return None

    def keep(self, name: str, arrays: State, owner: str) -> None:
        slot = f"{self.node.state_key}:{name}"
        self.context.state[slot] = arrays_from(arrays)
        self.context.state[f"{slot}:owner"] = ConfigRecord({"owner": owner})

    def unlearner(self, name: str) -> Unlearner:
        return configured_unlearner(self.config, name)

    # ------------------------------------------------------------------ models
    def model_shape(self) -> tuple[int, int, int]:
        """The run model's classes, input channels and image size for the node's images."""
        data = self.training_data()[0]
        return self.num_classes, int(data.x.shape[1]), int(data.x.shape[2])

    def model_from(self, state: dict) -> ClassifierModel:
        """A fresh model of the run's architecture holding ``state``."""
        model = build_model(self.config.model, *self.model_shape())
        model.load_state_dict(state)
        return model

    def received_model(self) -> ClassifierModel:
        return self.model_from(self.message.content[P.ARRAYS].to_torch_state_dict())

    def refilled_model(self) -> ClassifierModel:
        """This process's model of the run's shape, holding the received weights.

        For plain local training only: the model is shared by every message this actor
        serves, so a handler that keeps a model, holds two at once or hooks into one builds
        its own.
        """
        shape = self.model_shape()
        model = _process_model(self.config.model, tuple(self.config.plugins), *shape)
        model.load_state_dict(self.message.content[P.ARRAYS].to_torch_state_dict())
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


def _reference_key(view: NodeView) -> str:
    """Where this node keeps the global model it received before asking for its deletion."""
    return f"{view.node.state_key}:reference"


def _training_work(view: NodeView) -> list[ClientWork]:
    """The needs' work next to this round's training (the round's config names them)."""
    text = str(view.message.content[P.CONFIG].get(P.TRAINING_NEEDS, ""))
    if not text:
        return []
    entries = {
        **json.loads(text),
        P.SHARED_MODEL: str(view.message.content[P.CONFIG].get(P.SHARED_MODEL, 0)),
    }
    work = [NEEDS.lookup(name).client_training(view, entries) for name in json.loads(text)]
    return [w for w in work if w is not None]


def _train_reply(
    view: NodeView,
    epochs: int | None,
    lr: float,
    proximal_mu: float = 0.0,
    max_samples: int | None = None,
    work: list[ClientWork] | None = None,
) -> Message:
    data, ids = view.training_data()
    if len(data) == 0:
        raise RuntimeError("this client holds no data any more (it left the federation)")
    if max_samples is not None and len(data) > max_samples:  # a relay hop: a seeded subset
        keep = _seeded_positions(len(data), max_samples, view.round_seed)
        data, ids = data.subset(keep), ids[keep]
        view.hold(data, ids)
    work = work or []
    hooks = [w.hook for w in work if w.hook is not None]
    model = view.received_model() if hooks else view.refilled_model()
    config = view.config
    # A strategy sends the run's derived values; a configuration from elsewhere that left them
    # unset gets this node's (from data its policy allowed it to read).
    settings = config.train.resolved([len(data)])
    result = train_local(
        model,
        data,
        epochs=epochs or settings.local_epochs,
        lr=lr,
        momentum=config.train.momentum,
        batch_size=settings.batch_size,
        seed=view.round_seed,
        device=view.device,
        proximal_mu=proximal_mu,
        on_step=_chained(hooks),
    )
    deleted_passes = int(result.index_counts[view.deleted_mask(ids)].sum())
    metrics = {
        P.NUM_EXAMPLES: result.num_examples,
        P.TRAIN_LOSS: result.mean_loss,
        P.COMPUTE_SECONDS: result.seconds,
    }
    content = RecordDict({P.ARRAYS: ArrayRecord(model.state_dict())})
    for part in work:
        records, extra, passes = part.finish(model)
        for key, record in records.items():
            content[key] = record
        metrics.update(extra)
        deleted_passes += passes
    return _round_reply(view, content, metrics, deleted_passes)


def _chained(hooks: list[StepHook]) -> StepHook | None:
    """One step hook that calls ``hooks`` in order (``None`` when there are none)."""
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def chained(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        for hook in hooks:
            hook(model, x, y)

    return chained


def _seeded_positions(size: int, limit: int, seed: int) -> np.ndarray:
    """``limit`` of ``size`` positions, drawn with ``seed``, in order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(size, limit, replace=False))


def _round_reply(
    view: NodeView, content: RecordDict, metrics: dict[str, float | int], deleted_passes: int
) -> Message:
    """A training reply: the trained arrays, metrics and this node's pending deletion.

    When the round's config sets ``attach-forget`` (the server's unlearner needs D_f), a
    pending deletion's D_f travels in the same reply, as paper 000's client sends it with its
    request: the deletion step then needs no ``query.forget_data`` round trip.
    """
    message, node = view.message, view.node
    server_round = int(message.content[P.CONFIG].get(P.SERVER_ROUND, 0))
    pending = node.pending(server_round)
    if pending.count:  # the last global model before the deletion: the verification reference
        view.context.state[_reference_key(view)] = message.content[P.ARRAYS]
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
        content[P.DATA] = data_record(node.forget_data(list(pending.requests)))
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """A FedAvg round: train on the local data that is still held; report pending deletions."""
    view = NodeView(message, context)
    settings = view.config.train
    return _train_reply(view, settings.local_epochs, settings.lr, work=_training_work(view))


@app.train("gan")
def gan_train(message: Message, context: Context) -> Message:
    """A FedAvg round of the GAN task: train the conditional GAN on the data still held."""
    from fedforget.gan import build_conditional_gan, train_gan

    view = NodeView(message, context)
    data, ids = view.training_data()
    if len(data) == 0:
        raise RuntimeError("this client holds no data any more (it left the federation)")
    config = view.config
    gan = build_conditional_gan(view.num_classes, data.x.shape[1:], width=config.gan.width)
    gan.load_state_dict(message.content[P.ARRAYS].to_torch_state_dict())
    result = train_gan(
        gan,
        data,
        epochs=config.gan.epochs,
        lr=config.gan.lr,
        batch_size=config.gan.batch_size,
        seed=view.round_seed,
        device=view.device,
    )
    metrics = {
        P.NUM_EXAMPLES: result.num_examples,
        P.TRAIN_LOSS: result.d_loss,
        P.GAN_LOSS: result.g_loss,
        P.COMPUTE_SECONDS: result.seconds,
    }
    deleted_passes = config.gan.epochs * int(view.deleted_mask(ids).sum())
    content = RecordDict({P.ARRAYS: ArrayRecord(gan.cpu().state_dict())})
    return _round_reply(view, content, metrics, deleted_passes)


@app.train("relay")
def relay_train(message: Message, context: Context) -> Message:
    """Recovery relay (paper 000 IV.C.3): the weakest client trains the model it was sent."""
    return NodeView(message, context).train_as_told()


@app.query("deletion_complete")
def deletion_complete(message: Message, context: Context) -> Message:
    """The deletion is being carried out: drop the deleted samples (and what was made from
    them: a method's kept arrays) for good."""
    view = NodeView(message, context)
    dropped = _drop_deleted(view)
    metrics: dict[str, float | int] = {P.NUM_FORGET: dropped}
    if message.content.array_records:  # a relay candidate: score the model, D_f now gone
        metrics.update(_local_scores(view))
    return view.reply({}, metrics)


def _drop_deleted(view: NodeView) -> int:
    """Carry out the drop order ``view``'s config holds; returns the samples dropped."""
    server_round = int(view.message.content[P.CONFIG].get(P.SERVER_ROUND, 0))
    dropped = view.node.carry_out(view.requests(), server_round)
    for need in NEEDS.values():
        need.client_deletion(view)
    return dropped


@app.query("deletion_status")
def deletion_status(message: Message, context: Context) -> Message:
    """A client the round did not sample reports its pending deletion (no training)."""
    view = NodeView(message, context)
    metrics = {P.NUM_EXAMPLES: 0, P.COMPUTE_SECONDS: 0.0}
    return _round_reply(view, RecordDict(), metrics, deleted_passes=0)


@app.query("local_eval")
def local_eval(message: Message, context: Context) -> Message:
    """Recovery relay: test the received models on this client's local data.

    At most ``recovery.eval_samples`` local samples (a fixed seeded subset) are scored: the
    relay only needs to rank clients and compare models, and every hop evaluates them all.
    The message's ``arrays`` is scored as ``accuracy``, each further ``arrays:<i>`` as
    ``accuracy:<i>`` (the relay sends the models before and after unlearning together).
    """
    view = NodeView(message, context)
    return view.reply({}, _local_scores(view))


def _local_scores(view: NodeView) -> dict[str, float | int]:
    """The accuracy of every model the message carries on this node's seeded eval subset."""
    config = view.config
    data, _ = view.training_data()
    limit = config.recovery.eval_samples
    if len(data) > limit:
        data = data.subset(_seeded_positions(len(data), limit, config.seed + view.partition_id))
    started = time.perf_counter()
    metrics: dict[str, float | int] = {P.NUM_EXAMPLES: len(data)}
    for name, record in view.message.content.array_records.items():
        key = P.ACCURACY + name.removeprefix(P.ARRAYS)
        model = view.model_from(record.to_torch_state_dict())
        metrics[key] = accuracy(model, data, view.device) if len(data) else 1.0
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
    view = NodeView(message, context)
    config, node = view.config, view.node
    stored = context.state.get(_reference_key(view))
    if stored is None:
        raise RuntimeError("this node kept no model from before its deletion request")
    task = node.verification_task(
        view.received_model(),
        view.model_from(stored.to_torch_state_dict()),
        "the global model this client received before its deletion request",
    )
    name = config.verify.method
    options = {"seed": config.seed + node.partition_id, "device": str(view.device)}
    verifier = build_verifier(name, **{**options, **config.methods.options.get(name, {})})
    result = verifier.verify(task)
    requested = str(message.content[P.CONFIG].get(P.VERIFY_DIR, ""))
    client = f"client-{node.partition_id}"
    folder = node.policy.verification_folder(requested, message.metadata.run_id, client)
    if folder is not None:
        result.write(folder)
    report = ConfigRecord({P.REPORT: json.dumps(result.to_json())})
    return view.reply({P.CONFIG: report}, {})


@app.query("forget_eval")
def forget_eval(message: Message, context: Context) -> Message:
    """A deleting node scores the models it is sent on its own deleted samples.

    The server of a deployment holds no D_f; the node does (the user's own data, no longer
    trained on). Each ArrayRecord of the message is one phase's model; only the accuracies
    and the sample count travel back.
    """
    view = NodeView(message, context)
    data = view.node.deleted_data()
    metrics: dict[str, float | int] = {P.NUM_EXAMPLES: len(data)}
    if len(data):
        for phase, record in message.content.array_records.items():
            model = view.model_from(record.to_torch_state_dict())
            metrics[f"{P.ACCURACY}:{phase}"] = accuracy(model, data, view.device)
    return view.reply({}, metrics)


@app.train("unlearn")
def unlearn(message: Message, context: Context) -> Message:
    """``--unlearn-on client``: unlearn this node's own D_f locally; only weights leave.

    The configured unlearner runs here on the received model, with the run's initial weights
    (a method's reference, e.g. an untrained teacher) sent along; D_f never leaves the node.
    """
    view = NodeView(message, context)
    settings = message.content[P.CONFIG]
    forget = view.forget_data()
    model = view.received_model()
    unlearner = view.unlearner(view.config.strategy)
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
            build_model=lambda: view.model_from(initial),
            device=view.device,
            seed=int(settings[P.SEED]),
        ),
    )
    metrics = {P.NUM_EXAMPLES: len(forget), P.COMPUTE_SECONDS: time.perf_counter() - started}
    return view.reply({P.ARRAYS: ArrayRecord(unlearned.cpu().state_dict())}, metrics)


register_need_handlers(app)
