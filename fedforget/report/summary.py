"""The schema of ``summary.json`` (documented in docs/outputs.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from fedforget.metrics import PhaseMetrics


class Phases(BaseModel):
    """The global model's metrics at the four phases of a run (``None`` if not reached)."""

    before_deletion: PhaseMetrics | None = None
    after_unlearning: PhaseMetrics | None = None
    after_recovery: PhaseMetrics | None = None
    final: PhaseMetrics | None = None


class Reference(BaseModel):
    """The retrain reference (baseline B1) and the final model's distance to it."""

    final: PhaseMetrics
    jsd: float = Field(description="Mean JSD of output distributions on the test set.")
    l2: float = Field(description="L2 distance of all weights.")
    jsd_forget: float | None = Field(None, description="Mean JSD of outputs on D_f.")
    at_deletion: PhaseMetrics | None = Field(
        None,
        description="The retrain at the (first) deletion round: what the model after recovery "
        "is compared with (the same point of training).",
    )
    members: int = Field(1, description="Retrains in the reference band (reference_seeds).")
    band: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="With several retrains: each final metric's mean and std over them.",
    )
    status: str = Field(
        "ok",
        description="ok, or why the reference is no reference (it diverged or sits at "
        "chance); its comparisons are then not results.",
    )


class Timings(BaseModel):
    """Wall-clock seconds of every phase."""

    round_seconds: list[float] = Field(default_factory=list)
    unlearning_seconds: float | None = None
    recovery_seconds: float | None = None
    retrain_seconds: float | None = None
    total_seconds: float | None = None


class DeletionSummary(BaseModel):
    """What was deleted and what the deletion step did."""

    mode: str
    round: int | None = None
    clients: list[int] = Field(default_factory=list)
    forget_samples: int = 0
    forget_classes: list[int] = Field(default_factory=list)
    nodes: list[int] = Field(
        default_factory=list, description="Flower node ids of the deleting clients."
    )
    unlearning_seconds: float = Field(0.0, description="Wall seconds of the unlearning.")
    recovery_seconds: float = Field(0.0, description="Wall seconds of the recovery relay.")
    relay_hops: int = Field(0, description="Relay hops tried.")
    relay_min_accuracy: float | None = Field(
        None, description="The relay's objective at its end (see relay_objective)."
    )
    relay_hops_kept: int = Field(0, description="Hops whose model raised the objective.")
    relay_stop: str | None = Field(
        None,
        description="Why the relay ended: standard (met), max_hops, budget (time) or "
        "no_training (no candidate could train).",
    )
    relay_trace: list[dict] = Field(
        default_factory=list,
        description="Each hop: clients (ids), lr, before and after (the objective), kept, "
        "p_value (the sign test on a validation set, else null).",
    )
    relay_objective_start: float | None = Field(
        None,
        description="The relay's objective before its hops: accuracy on the declared "
        "validation set, or the candidates' sample-weighted local accuracy (see "
        "relay_objective_source).",
    )
    relay_objective: float | None = Field(None, description="The same after the relay.")
    relay_objective_before: float | None = Field(
        None, description="The same for the model before unlearning (the standard to restore)."
    )
    relay_objective_source: str | None = Field(
        None, description="What the relay's objective measured: validation or clients."
    )
    relay_client_calls: int = Field(0, description="Client evaluations + trainings of the relay.")
    needs: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per data need of the method (fedforget.needs): the figures its gathering "
        "and its work during training recorded, e.g. forget.samples_received, retain.samples, "
        "history.bytes, rounds.client_training_calls, generator.bytes, "
        "synthetic.training_client_seconds (a need's training figures add up over the run).",
    )
    bytes_to_clients: int = Field(
        0, description="Payload bytes the deletion step's messages carried to the clients."
    )
    bytes_from_clients: int = Field(
        0, description="Payload bytes of the clients' replies during the deletion step."
    )
    client_compute_seconds: float = Field(
        0.0, description="Compute seconds the clients reported for the deletion step."
    )
    server_seconds: float = Field(
        0.0, description="The step's wall seconds less the time it waited for replies."
    )
    round_trips: int = Field(
        0,
        description="Message exchanges the step waited for, one after the other (on a "
        "deployment each costs a message's latency, whatever its compute).",
    )
    validation_accuracy_before: float | None = Field(
        None, description="The model's accuracy on the declared validation set before the step."
    )
    validation_chance: float | None = Field(
        None, description="The validation set's chance level (its most frequent class's share)."
    )
    skipped: str | None = Field(
        None,
        description="Why the step ran no unlearning and no relay: 'untrained' (the model sat "
        "within 10 pt of chance on the validation set; the clients dropped D_f, FedAvg went "
        "on; deletion.untrained = 'drop').",
    )
    requests: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The requests of every deletion step: round, client, node, request ids, "
        "classes, samples and status: confirmed (the node's reply to query.deletion_complete "
        "said it recorded the deletion), pending (no confirmation; fault says why, and the "
        "node still holds the request and reports it again) or confirmed_later (a later "
        "step's entry, in confirmed_round, holds the confirmation).",
    )
    node_forget_accuracy: dict[str, float] = Field(
        default_factory=dict,
        description="The deleting nodes' own accuracy on their deleted samples, per phase "
        "(before_deletion, after_unlearning, after_recovery, final), sample-weighted over the "
        "nodes that answered: measured on the nodes, only numbers travel (requests mode).",
    )
    node_forget_samples: int = Field(
        0, description="Deleted samples the nodes scored for node_forget_accuracy."
    )
    faults: list[dict[str, Any]] = Field(
        default_factory=list, description="Nodes that failed or timed out, and at which message."
    )

    @property
    def wall_seconds(self) -> float:
        """The deletion step's wall time: unlearning plus recovery."""
        return self.unlearning_seconds + self.recovery_seconds

    def need_figure(self, need: str, figure: str, default: float = 0.0) -> float:
        """One figure a data need recorded (``default`` when the method has no such need)."""
        return self.needs.get(need, {}).get(figure, default)

    def training_client_seconds(self) -> float:
        """Client compute the method's needs added to the clients' FedAvg training."""
        return sum(figures.get("training_client_seconds", 0.0) for figures in self.needs.values())


class Bookkeeping(BaseModel):
    """Sample passes over D_f reported by the clients: after the deletion it must be 0."""

    deleted_passes_before_deletion: int = 0
    deleted_passes_after_deletion: int = 0


class Efficiency(BaseModel):
    """Simulation efficiency = client compute seconds / (cores x round wall seconds)."""

    cores: int
    client_compute_seconds: float
    round_wall_seconds: float
    efficiency: float


class Summary(BaseModel):
    """Everything a run reports; written to ``summary.json``."""

    fedforget_version: str
    strategy: str
    phases: Phases = Field(default_factory=Phases)
    reference: Reference | None = None
    timings: Timings = Field(default_factory=Timings)
    deletion: DeletionSummary = Field(
        description="The latest deletion step (with every step's requests and faults)."
    )
    deletions: list[DeletionSummary] = Field(
        default_factory=list, description="Each deletion step carried out, in order."
    )
    bookkeeping: Bookkeeping = Field(default_factory=Bookkeeping)
    efficiency: Efficiency | None = None
    verification: list[dict[str, Any]] | None = None
    out_dir: str | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="What makes the run's comparison doubtful: the federation not learned or "
        "not converged at the deletion round, a diverged reference (one line each).",
    )
    config: dict[str, Any]
